#!/usr/bin/env bash
# Fuzzing (`make fuzz`; `make test` runs --smoke). Builds the libFuzzer targets with ASan + UBSan
# (vmm-native/fuzz: virtqueues and vsock packets, the 9p server, the migration stream, the state
# file, device registers and saved device state, the vsock connection state machine, virtio-net's
# queues and backend, virtio-blk's requests on a disk image;
# guest/agent/fuzz: the agent's message decoders; shim/launcher/fuzz: the shim launcher's reading
# of an OCI spec) and runs each from its seed corpus, then
# the TypeScript decoders' property tests (fast-check: ttrpc and agent frames, a spare's handoff).
#   fuzz.sh                 FUZZ_RUNS inputs per target (default 2000000); new inputs are kept in
#                           $STENCIL_CACHE/fuzz/corpus/<target>, so later runs start further in
#   fuzz.sh --smoke         FUZZ_SMOKE_SECONDS per target (default 5), corpus in a temp dir
#   fuzz.sh --write-seeds   rewrites the seed corpora in the repo from each target's own encoder
#   FUZZ_TARGETS="p9_server devices" limits the libFuzzer targets; FUZZ_JS=0 skips the TypeScript part
# One line per target (inputs, seconds, new coverage); a crash or sanitizer report fails the run,
# and its input is kept in $STENCIL_CACHE/fuzz/artifacts with the report.
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/lib.sh"
top="$(cd "$here/.." && pwd)"
mode="${1:-full}"
case "$mode" in full | --smoke | --write-seeds) ;; *) die "usage: fuzz.sh [--smoke|--write-seeds]" ;; esac

ensure_debs clang-14 libclang-rt-14-dev
make -s -C "$top/vmm-native" -j"$(nproc)" fuzz-targets >&2
build="$top/vmm-native/build/san"
clang-14 -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Wall -Wextra -Werror -o "$build/agent_proto_fuzz" "$top/guest/agent/fuzz/proto_fuzz.c" \
  "$top"/guest/agent/src/{proto,pb,buf}.c
clang-14 -std=gnu11 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Wall -Wextra -Werror -o "$build/spec_annotation_fuzz" "$top/shim/launcher/fuzz/spec_annotation_fuzz.c" \
  "$top/shim/launcher/spec_annotation.c"

# target name -> its binary, seed corpus and largest input
declare -A seeds=(
  [virtqueue]="$top/vmm-native/fuzz/corpus/virtqueue"
  [migration_stream]="$top/vmm-native/fuzz/corpus/migration_stream"
  [state_file]="$top/vmm-native/fuzz/corpus/state_file"
  [p9_server]="$top/vmm-native/fuzz/corpus/p9_server"
  [devices]="$top/vmm-native/fuzz/corpus/devices"
  [vsock_muxer]="$top/vmm-native/fuzz/corpus/vsock_muxer"
  [virtio_net]="$top/vmm-native/fuzz/corpus/virtio_net"
  [virtio_blk]="$top/vmm-native/fuzz/corpus/virtio_blk"
  [agent_proto]="$top/guest/agent/fuzz/corpus"
  [spec_annotation]="$top/shim/launcher/fuzz/corpus"
)
declare -A max_len=([virtqueue]=70000 [migration_stream]=65536 [state_file]=16384 [p9_server]=4096 [devices]=65536 [vsock_muxer]=8192 [virtio_net]=70000 [virtio_blk]=70000 [agent_proto]=8192 [spec_annotation]=16384)
targets=(virtqueue migration_stream state_file p9_server devices vsock_muxer virtio_net virtio_blk agent_proto spec_annotation)
if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
  for t in "${targets[@]}"; do [ -n "${seeds[$t]:-}" ] || die "unknown fuzz target '$t' (known: ${!seeds[*]})"; done
fi

if [ "$mode" = --write-seeds ]; then
  for t in "${targets[@]}"; do
    # hand-written seeds: protobuf (guest/agent/fuzz/corpus), OCI specs (shim/launcher/fuzz/corpus)
    [ "$t" = agent_proto ] || [ "$t" = spec_annotation ] && continue
    rm -rf "${seeds[$t]}" && mkdir -p "${seeds[$t]}"
    STENCIL_FUZZ_WRITE_SEEDS="${seeds[$t]}" "$build/${t}_fuzz"
  done
  exit 0
fi

artifacts="$STENCIL_CACHE/fuzz/artifacts"
mkdir -p "$artifacts"
scratch="$(mktemp -d /tmp/stencil-fuzz-XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
failed=0
total=0
for t in "${targets[@]}"; do
  if [ "$mode" = --smoke ]; then
    corpus="$scratch/corpus-$t"
    limit=(-max_total_time="${FUZZ_SMOKE_SECONDS:-5}")
  else
    corpus="$STENCIL_CACHE/fuzz/corpus/$t"
    limit=(-runs="${FUZZ_RUNS:-2000000}")
  fi
  mkdir -p "$corpus"
  log_file="$scratch/$t.log"
  start=$(date +%s)
  set +e
  "$build/${t}_fuzz" "${limit[@]}" -max_len="${max_len[$t]}" -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$t-" "$corpus" "${seeds[$t]}" >"$log_file" 2>&1
  rc=$?
  set -e
  seconds=$(($(date +%s) - start))
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log_file" | tail -1)"
  cov="$(grep -o 'cov: [0-9]*' "$log_file" | tail -1 | cut -d' ' -f2)"
  total=$((total + ${runs:-0}))
  if [ "$rc" -ne 0 ] || grep -q -E 'ERROR: (AddressSanitizer|libFuzzer)|runtime error:' "$log_file"; then
    failed=$((failed + 1))
    cp "$log_file" "$artifacts/$t.log"
    echo "fuzz $t: FAILED after ${runs:-?} inputs (exit $rc); report and input in $artifacts/$t*"
    grep -E -m5 'ERROR:|runtime error:|SUMMARY' "$log_file" | sed 's/^/  /'
  else
    echo "fuzz $t: ${runs:-?} inputs in ${seconds}s, ${cov:-?} coverage points, 0 crashes, 0 sanitizer reports"
  fi
done

# The TypeScript decoders (ttrpc and agent frames, a spare's handoff): fast-check properties, more runs in full mode.
js_runs=$([ "$mode" = --smoke ] && echo 2000 || echo "${FUZZ_JS_RUNS:-200000}")
if [ "${FUZZ_JS:-1}" = 0 ]; then
  :
elif STENCIL_FUZZ_JS_RUNS="$js_runs" node --test --test-reporter=dot "$top"/dist/shim/src/ttrpc/frame.fuzz.js "$top"/dist/shim/src/agent/framing.fuzz.js \
  "$top"/dist/shim/src/shim/spare.fuzz.js; then
  echo "fuzz typescript decoders: $js_runs inputs per property, 0 failures"
  total=$((total + js_runs * 6))  # six properties
else
  failed=$((failed + 1))
  echo "fuzz typescript decoders: FAILED"
fi
echo "fuzz: $total inputs in all, $failed target(s) failed"
[ "$failed" -eq 0 ]
