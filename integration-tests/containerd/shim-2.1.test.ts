// The ctr scenarios (shim-scenarios.ts) on containerd 2.1, over ttrpc and then gRPC, in an
// emulated host of their own.
import { grpcScenarios, shimScenarios, useShimTemplate } from './shim-scenarios.js';

useShimTemplate();
shimScenarios('2.1');
grpcScenarios();
