// The ctr scenarios (shim-scenarios.ts) on containerd 1.6, over ttrpc, in an emulated host of their own.
import { shimScenarios, useShimTemplate } from './shim-scenarios.js';

useShimTemplate();
shimScenarios('1.6');
