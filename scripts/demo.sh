#!/usr/bin/env bash
# The demo: boot the Stencil guest kernel in a microVM driven by Stencil's own KVM core and show
# its serial console. (Later: a container in a VM cloned from a template, through containerd.)
set -euo pipefail
cd "$(dirname "$0")/.."
script='echo; echo "Hello from a Stencil microVM"; uname -sr; echo "vCPUs: $(nproc)"; grep MemTotal /proc/meminfo; cat /sys/class/misc/hw_random/rng_current 2>/dev/null'
exec bin/stencil vm run --vcpus 2 --memory 256M --cmdline "stencil_run=$(printf '%s' "$script" | base64 -w0)"
