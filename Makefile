# Stencil build entry points. `make demo` and `make test` do all setup on a fresh machine;
# slow one-time outputs (guest kernel, initramfs, Debian packages) are cached outside the repo
# under $(STENCIL_CACHE), keyed by a hash of their inputs.
SHELL := /bin/bash
export STENCIL_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/stencil

# Compiler cache (Debian's ccache, installed by scripts/deps.sh) in the cache directory: a clone
# whose C++ another build on this machine compiled already reuses those objects instead of
# compiling ~70 files three ways (addon, sanitized tests, bench) on a 2-core machine. Paths under
# the clone are hashed relative to it, and without the working directory (-g's), so clones at
# different paths share entries. Absent (a first run, before deps.sh): plain compilers.
CCACHE = $(shell command -v ccache 2>/dev/null)
export CCACHE_DIR ?= $(STENCIL_CACHE)/ccache
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1
export CCACHE_MAXSIZE ?= 4G

ADDON := vmm-native/build/Release/stencil_vmm.node
# Build the addon against the installed Node's own headers when present (no header download).
NODEDIR ?= $(shell test -f /usr/include/node/node_api.h && echo /usr)
# The product (tsconfig.json: what bin/ runs) leaves out tests and test support (*.test.ts,
# testing/ directories, integration-tests/); tsconfig.test.json adds them to the same dist/.
PRODUCT_TS := $(shell find common/src shim/src runtime-config/src -name '*.ts' -not -name '*.test.ts' -not -path '*/testing/*' 2>/dev/null)
TS_SOURCES := $(shell find common/src shim/src runtime-config/src integration-tests -name '*.ts' 2>/dev/null)
NATIVE_SOURCES := $(shell find vmm-native/src -name '*.cc' -o -name '*.h') vmm-native/binding.gyp

.PHONY: all deps build build-tests guest install lint test unit-test harness-test integration-deps integration-test cri-reference-test cri-test shim-test demo bench soak fuzz fuzz-smoke clean

all: build guest

deps: .deps-stamp
.deps-stamp: scripts/deps.sh scripts/lib.sh
	scripts/deps.sh
	@touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(ADDON): node_modules/.package-lock.json $(NATIVE_SOURCES) .deps-stamp
	cd vmm-native && CC="$(strip $(CCACHE) $(CC))" CXX="$(strip $(CCACHE) $(CXX))" \
	  ../node_modules/.bin/node-gyp rebuild --loglevel=warn $(if $(NODEDIR),--nodedir=$(NODEDIR))

dist/.stamp: node_modules/.package-lock.json tsconfig.json $(PRODUCT_TS)
	node_modules/.bin/tsc -p tsconfig.json
	@touch $@

dist/.test-stamp: dist/.stamp tsconfig.test.json $(TS_SOURCES)
	node_modules/.bin/tsc -p tsconfig.test.json
	@touch $@

# The shim as containerd runs it: one ES module bundle (plus lazily loaded chunks for its start,
# delete and serve actions) made by esbuild from tsc's output. Each shim process would otherwise
# resolve and read ~300 module files with ~1,200 stat/open calls before serving. Native addons and
# the packages the code loads through createRequire stay outside and are resolved at run time; the
# banner gives bundled CommonJS code (protobufjs, grpc-js, winston) a working `require`. Bundled
# packages see NODE_ENV "production", as is usual for a bundle: winston's internal debug output
# (@dabh/diagnostics, off unless asked for) then leaves out its development build and its colour
# tables: an idle daemon held 14.3 instead of 14.7 MB of anonymous memory (integration-tests/README).
SHIM_BUNDLE_BANNER := import { createRequire as __stencilCreateRequire } from 'node:module'; const require = __stencilCreateRequire(import.meta.url);
dist/shim-bundle/.stamp: dist/.stamp node_modules/.package-lock.json
	rm -rf dist/shim-bundle
	node_modules/.bin/esbuild dist/shim/src/shim/main.js --bundle --splitting --format=esm --platform=node \
	  --target=node20 --outdir=dist/shim-bundle --log-level=warning --log-override:direct-eval=silent \
	  --banner:js="$(SHIM_BUNDLE_BANNER)" --define:process.env.NODE_ENV='"production"'
	@touch $@

# containerd's entry point (bin/containerd-shim-stencil-v2 links to it): answers `start` for a pod
# whose daemon runs without starting Node, and runs the bundle's main.js for everything else.
SHIM_LAUNCHER := build/bin/containerd-shim-stencil-v2
$(SHIM_LAUNCHER): $(wildcard shim/launcher/*.c shim/launcher/*.h)
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Wextra -Werror -std=gnu11 -o $@ $(filter %.c,$^) -lcrypto

build: $(ADDON) dist/.stamp dist/shim-bundle/.stamp $(SHIM_LAUNCHER)

# The tests, test support, integration tests, benchmarks and the demo driver.
build-tests: build dist/.test-stamp

# Guest kernel + initramfs (cached); build/guest.json tells the runtime where they are.
guest: .deps-stamp
	@mkdir -p build
	@kernel_dir="$$(guest/kernel/build.sh)" && initrd="$$(guest/initramfs/build.sh)" && \
	  printf '{"kernel":"%s/vmlinux","bzImage":"%s/bzImage","initrd":"%s"}\n' \
	    "$$kernel_dir" "$$kernel_dir" "$$initrd" > build/guest.json.tmp && mv build/guest.json.tmp build/guest.json
	@echo "guest: $$(cat build/guest.json)"

# The shim for containerd (runtime io.containerd.stencil.v2): a link in a directory on containerd's
# PATH, to bin/containerd-shim-stencil-v2 here (the launcher, which runs dist/ with this machine's node).
PREFIX ?= /usr/local
install: build guest
	install -d $(DESTDIR)$(PREFIX)/bin
	ln -sf $(CURDIR)/bin/containerd-shim-stencil-v2 $(DESTDIR)$(PREFIX)/bin/containerd-shim-stencil-v2
	@echo "installed $(DESTDIR)$(PREFIX)/bin/containerd-shim-stencil-v2"

unit-test: build-tests .deps-stamp
	$(MAKE) -C vmm-native -j$$(nproc) test
	@# A test file that leaves a handle open never ends (node --test waits for it): fail after
	@# 15 min (the run takes ~1-2) instead of using up CI's time.
	timeout 900 node --test --test-reporter=spec $$(find dist/common dist/shim dist/runtime-config -name '*.test.js' 2>/dev/null) || \
	  { rc=$$?; [ $$rc = 124 ] && echo "unit-test: the TS unit run did not end within 15 min (a test file left a handle open?)"; exit $$rc; }

# Real containerd 1.6 + 2.1, runc and a busybox image for the containerd tests, unpacked into the
# cache (integration-tests/containerd/setup.sh; needs the Debian mirrors once, not the emulated host).
integration-deps: .deps-stamp
	@integration-tests/containerd/setup.sh >/dev/null

# VM tests boot the real guest kernel under a real KVM: directly where this host's KVM can run
# stock guests, otherwise inside the emulated host (integration-tests/emulated-host).
# integration-tests/run-tests.ts runs each file in its own run-vm session (a fresh emulated host per
# file there); in the emulated host it retries, loudly and once, only tests that failed because a
# guest triple-faulted, and files whose emulated host's own kernel panicked in its page-fault entry,
# triple-faulted without a word or froze (that host's own faults: integration-tests/README.md).
# Its last line sums up the run, with the nested-boot retries integration-tests/lib/guest.ts logged
# to build/guest-boots.log.
# CRI deadlines x3 (180 s a call): the slowest call of these scenarios takes ~30 s in the emulated
# host, and a call that hangs should cost CI minutes, not its whole budget (make cri-test's 20
# pods at once need x6).
integration-test: build-tests guest integration-deps
	STENCIL_CRI_HANDLERS=stencil STENCIL_CRI_VERSIONS=2.1 STENCIL_CRI_TIMEOUT_SCALE=3 STENCIL_SHIM_LONG_ON=2.1 \
	  STENCIL_CRI_SKIP_STENCIL_PARALLEL="left to make cri-test: a clone triple-faulted once under that load (integration-tests/README.md)" \
	  node dist/integration-tests/run-tests.js --each-in-run-vm $(VM_TEST_FILES)

# The test harness's own tests, here on the build machine, never inside an emulated host (~2 min):
# the emulated host's exit codes (host/, which start emulated hosts themselves), test support's
# unit tests (lib/) and the containerd harness checked with runc (containerd/runc.test.ts). None
# boots a VM, and an emulated host would only make them ~10x slower.
HARNESS_TEST_FILES = $(sort $(wildcard dist/integration-tests/host/*.test.js dist/integration-tests/lib/*.test.js) dist/integration-tests/containerd/runc.test.js)
# Everything else boots VMs: each file in its own run-vm session (integration-tests/run-tests.ts).
VM_TEST_FILES = $(sort $(filter-out $(HARNESS_TEST_FILES),$(shell find dist/integration-tests -name '*.test.js')))
harness-test: build-tests guest integration-deps
	node --test --test-concurrency=1 --test-reporter=spec $(HARNESS_TEST_FILES)


# ESLint (eslint.config.js): recommended rules, and product code never imports test support.
lint: node_modules/.package-lock.json
	node_modules/.bin/eslint .

# The CRI scenarios with runc, the reference that proves the CRI harness, on this machine (no VM
# needed; ~20 s for containerd 1.6 and 2.1). Stencil's run in integration-test (cri.test.ts).
cri-reference-test: build-tests integration-deps
	STENCIL_CRI_HANDLERS=runc node --test --test-concurrency=1 --test-reporter=spec dist/integration-tests/containerd/cri.test.js

# Fuzzing (scripts/fuzz.sh): libFuzzer targets under ASan + UBSan and the TypeScript decoders'
# properties. `make fuzz` runs 2 M inputs per target (FUZZ_RUNS; ~45 min in all); `make test`
# a 5-second smoke run of each from its seed corpus (plus ~4 min to build them the first time).
fuzz: build-tests
	scripts/fuzz.sh
fuzz-smoke: build-tests
	scripts/fuzz.sh --smoke

test: lint unit-test fuzz-smoke harness-test cri-reference-test integration-test

# The CRI scenarios (containerd/cri.test.ts) on both containerd versions: runc, the reference, on
# this machine; Stencil's handler where run-vm puts VMs (each VM pod ~20-40 s in the emulated host,
# ~6 min per version). `make test` runs Stencil's on containerd 2.1 only, to keep within CI's time,
# and without its 20 pods at once (see STENCIL_CRI_SKIP_STENCIL_PARALLEL in cri.test.ts).
cri-test: cri-reference-test build-tests guest integration-deps
	STENCIL_CRI_HANDLERS=stencil STENCIL_CRI_TIMEOUT_SCALE=6 integration-tests/run-vm \
	  node --test --test-concurrency=1 --test-reporter=spec dist/integration-tests/containerd/cri.test.js

# The ctr scenarios (containerd/shim-scenarios.ts) in full on both containerd versions; `make test`
# runs the VM-level ones (template miss, OOM, guest panic, checkpoint, migrate) on 2.1 only (STENCIL_SHIM_LONG_ON).
shim-test: build-tests guest integration-deps
	integration-tests/run-vm node --test --test-concurrency=1 --test-reporter=spec dist/integration-tests/containerd/shim-1.6.test.js \
	  dist/integration-tests/containerd/shim-2.1.test.js

demo: build-tests guest integration-deps
	integration-tests/run-vm scripts/demo.sh

# The VMM-level restore and migration benchmarks run on this host's own /dev/kvm (a CPL3 guest needs no stock
# guest support, so kvm_pvm runs it natively); the others run where run-vm puts them.
# The emulated host (where one is needed) gets a scratch ext4 disk for agent-bench's 9p figures.
bench: build-tests guest integration-deps
	$(MAKE) -C vmm-native bench
	vmm-native/build/bench/restore-bench
	vmm-native/build/bench/migration-bench
	EMULATED_HOST_SCRATCH_DISK=2G integration-tests/run-vm integration-tests/bench/run-all

# Issue 13's load figures (integration-tests/bench/load-soak.ts): 100 workers run containers through
# containerd for 10 minutes, Stencil (templates) and then runc as the anchor; failures, output
# checks, shim memory over time, leaks. Not in `make test`; SOAK_ARGS changes the load, e.g.
# SOAK_ARGS="--concurrency 8 --seconds 180" in the emulated host.
soak: build-tests guest integration-deps
	integration-tests/run-vm node dist/integration-tests/bench/load-soak.js $(SOAK_ARGS)

clean:
	rm -rf dist build vmm-native/build .deps-stamp
