#!/usr/bin/env bash
# Host packages Stencil's build and tests need (Debian). Idempotent and quiet when all are there.
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
ensure_debs build-essential python3 libgtest-dev qemu-system-x86 busybox-static cpio musl-tools crun socat \
  containernetworking-plugins iptables iproute2 clang-14 libclang-rt-14-dev ccache
