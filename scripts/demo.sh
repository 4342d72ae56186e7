#!/usr/bin/env bash
# The demo: an admin preloads the template pool (`stencil pool init`: boots one pod VM, waits for
# its agent, saves it into the template tmpfs), then containerd runs a busybox container with the
# Stencil runtime, whose pod VM is cloned from that template (see integration-tests/demo.ts).
cd "$(dirname "$0")/.."
. scripts/lib.sh
echo "demo: bin/stencil pool init"
bin/stencil pool init
exec node dist/integration-tests/demo.js
