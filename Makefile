# Stencil build entry points. `make demo` and `make test` do all setup on a fresh machine;
# slow one-time outputs (guest kernel, initramfs, Debian packages) are cached outside the repo
# under $(STENCIL_CACHE), keyed by a hash of their inputs.
SHELL := /bin/bash
export STENCIL_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/stencil

ADDON := vmm-native/build/Release/stencil_vmm.node
# Build the addon against the installed Node's own headers when present (no header download).
NODEDIR ?= $(shell test -f /usr/include/node/node_api.h && echo /usr)
TS_SOURCES := $(shell find shim/src runtime-config/src integration-tests -name '*.ts' 2>/dev/null)
NATIVE_SOURCES := $(shell find vmm-native/src -name '*.cc' -o -name '*.h') vmm-native/binding.gyp

.PHONY: all deps build guest install test unit-test integration-deps integration-test demo bench clean

all: build guest

deps: .deps-stamp
.deps-stamp: scripts/deps.sh scripts/lib.sh
	scripts/deps.sh
	@touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(ADDON): node_modules/.package-lock.json $(NATIVE_SOURCES) .deps-stamp
	cd vmm-native && ../node_modules/.bin/node-gyp rebuild --loglevel=warn $(if $(NODEDIR),--nodedir=$(NODEDIR))

dist/.stamp: node_modules/.package-lock.json tsconfig.json $(TS_SOURCES)
	node_modules/.bin/tsc -p tsconfig.json
	@touch $@

build: $(ADDON) dist/.stamp

# Guest kernel + initramfs (cached); build/guest.json tells the runtime where they are.
guest: .deps-stamp
	@mkdir -p build
	@kernel_dir="$$(guest/kernel/build.sh)" && initrd="$$(guest/initramfs/build.sh)" && \
	  printf '{"kernel":"%s/vmlinux","bzImage":"%s/bzImage","initrd":"%s"}\n' \
	    "$$kernel_dir" "$$kernel_dir" "$$initrd" > build/guest.json.tmp && mv build/guest.json.tmp build/guest.json
	@echo "guest: $$(cat build/guest.json)"

# The shim for containerd (runtime io.containerd.stencil.v2): a link in a directory on containerd's
# PATH, to bin/containerd-shim-stencil-v2 here (which runs dist/ with this machine's node).
PREFIX ?= /usr/local
install: build guest
	install -d $(DESTDIR)$(PREFIX)/bin
	ln -sf $(CURDIR)/bin/containerd-shim-stencil-v2 $(DESTDIR)$(PREFIX)/bin/containerd-shim-stencil-v2
	@echo "installed $(DESTDIR)$(PREFIX)/bin/containerd-shim-stencil-v2"

unit-test: build .deps-stamp
	$(MAKE) -C vmm-native -j$$(nproc) test
	node --test --test-reporter=spec $$(find dist/shim dist/runtime-config -name '*.test.js' 2>/dev/null)

# Real containerd 1.6 + 2.1, runc and a busybox image for the containerd tests, unpacked into the
# cache (integration-tests/containerd/setup.sh; needs the Debian mirrors once, not the emulated host).
integration-deps: .deps-stamp
	@integration-tests/containerd/setup.sh >/dev/null

# VM tests boot the real guest kernel under a real KVM: directly where this host's KVM can run
# stock guests, otherwise inside the emulated host (integration-tests/emulated-host).
integration-test: build guest integration-deps
	integration-tests/run-vm node --test --test-concurrency=1 --test-reporter=spec \
	  $$(find dist/integration-tests -name '*.test.js' | sort)

test: unit-test integration-test

demo: build guest integration-deps
	integration-tests/run-vm scripts/demo.sh

# The emulated host (where one is needed) gets a scratch ext4 disk for agent-bench's 9p figures.
bench: build guest integration-deps
	EMULATED_HOST_SCRATCH_DISK=2G integration-tests/run-vm integration-tests/bench/run-all

clean:
	rm -rf dist build vmm-native/build .deps-stamp
