#!/usr/bin/env bash
# The demo: containerd runs a busybox container with the Stencil runtime; the container runs in a
# microVM driven by Stencil's own KVM core (see integration-tests/demo.ts).
cd "$(dirname "$0")/.."
. scripts/lib.sh
exec node dist/integration-tests/demo.js
