# isboot build, test and install. Everything runs with the pinned Deno that
# `make` installs from the npm registry into .tools/ (git-ignored).
DENO_VERSION := 2.9.6
TOOLS        := .tools
DENO         := $(TOOLS)/node_modules/@deno/linux-x64-glibc/deno
PREFIX       ?= /usr/local
DESTDIR      ?=
FUZZ_RUNS    ?= 100000
FUZZ_SEED    ?= random

export DENO
export DENO_NO_UPDATE_CHECK := 1

SOURCES := main.ts deno.json $(shell find src -name '*.ts' 2>/dev/null)

.PHONY: all deno deps check fmt lint test test-deps unit fuzz demo bench install clean

all: dist/isboot

$(DENO):
	mkdir -p $(TOOLS)
	printf '{"name":"isboot-tools","private":true}\n' > $(TOOLS)/package.json
	cd $(TOOLS) && npm install --no-audit --no-fund --ignore-scripts --loglevel=error deno@$(DENO_VERSION)
	@test -x $@ && touch $@

deno: $(DENO)

# npm dependencies (hash-wasm, fast-check) into node_modules/, as locked.
node_modules/.deno/.setup-cache.bin: $(DENO) deno.json deno.lock
	$(DENO) install --frozen --quiet
	@touch $@

deps: $(DENO) node_modules/.deno/.setup-cache.bin

dist/isboot: deps $(SOURCES)
	scripts/build.sh

fmt: deps
	$(DENO) fmt

check: deps
	$(DENO) fmt --check
	$(DENO) lint
	$(DENO) check main.ts src/ tests/ bench/

test-deps:
	scripts/test-deps.sh

# The whole suite: static checks, then every test (real peers included).
test: test-deps check dist/isboot
	ISBOOT_BIN=$(CURDIR)/dist/isboot scripts/run-tests.sh tests/

# Property and fuzz tests at full strength, exploring from a fresh seed (printed;
# `make test` uses a fixed one). A failure prints the ISBOOT_FUZZ_SEED and
# ISBOOT_FUZZ_PATH that rerun it; FUZZ_SEED=N reruns a whole fuzz run.
fuzz: deps
	ISBOOT_FUZZ_RUNS=$(FUZZ_RUNS) ISBOOT_FUZZ_SEED=$(FUZZ_SEED) \
	  scripts/run-tests.sh --filter '/fuzz|property/' tests/

# A real boot: iPXE + tgtd + qemu in a private network namespace, isboot in the
# initramfs, systemd on /dev/nbd0p1; the VM console on this terminal (needs root).
# DEMO_ARGS: bios|uefi initramfs-tools|dracut none|chap|mutual
demo: dist/isboot test-deps
	ISBOOT_BIN=$(CURDIR)/dist/isboot $(DENO) run -A tests/e2e/demo.ts $(DEMO_ARGS)

# Install the executable in the form it was built (single file, or launcher +
# isboot.js + deno kept together under $(PREFIX)/lib/isboot with a bin symlink)
# and both initramfs hooks where dracut and initramfs-tools look for them, and
# the ifupdown hook that keeps the boot NIC up in the booted system.
DRACUT_MODULES_DIR    ?= /usr/lib/dracut/modules.d
INITRAMFS_TOOLS_DIR   ?= /usr/share/initramfs-tools
IFUPDOWN_DIR          ?= /etc/network
install: dist/isboot
	@if [ -f dist/isboot.js ]; then \
	  install -d $(DESTDIR)$(PREFIX)/lib/isboot $(DESTDIR)$(PREFIX)/bin && \
	  install -m 0755 dist/deno dist/isboot $(DESTDIR)$(PREFIX)/lib/isboot/ && \
	  install -m 0644 dist/isboot.js $(DESTDIR)$(PREFIX)/lib/isboot/ && \
	  ln -sfn ../lib/isboot/isboot $(DESTDIR)$(PREFIX)/bin/isboot; \
	else \
	  install -D -m 0755 dist/isboot $(DESTDIR)$(PREFIX)/bin/isboot; \
	fi
	install -d $(DESTDIR)$(DRACUT_MODULES_DIR)/95isboot
	install -m 0755 initramfs-hook/dracut/95isboot/*.sh $(DESTDIR)$(DRACUT_MODULES_DIR)/95isboot/
	install -D -m 0644 man/isboot.8 $(DESTDIR)$(PREFIX)/share/man/man8/isboot.8
	install -D -m 0755 initramfs-hook/initramfs-tools/hooks/isboot $(DESTDIR)$(INITRAMFS_TOOLS_DIR)/hooks/isboot
	install -D -m 0755 initramfs-hook/initramfs-tools/scripts/local-top/isboot \
	  $(DESTDIR)$(INITRAMFS_TOOLS_DIR)/scripts/local-top/isboot
# The booted system's network stacks: ifupdown must not take down the links
# that carry the root disk (networkd and NetworkManager get their hand-off
# files under /run from the daemon at boot; nothing to install for them).
	install -D -m 0755 initramfs-hook/ifupdown/if-pre-down.d/isboot \
	  $(DESTDIR)$(IFUPDOWN_DIR)/if-pre-down.d/isboot

# Performance (never part of `make test`): installs bench/deps.apt, then runs the
# CRC32C study and isboot serve against qemu-nbd (libiscsi) and the ceilings;
# results go to docs/bench/. BENCH_ARGS=--quick for a short development run.
bench: dist/isboot
	bench/bench.sh $(BENCH_ARGS)

clean:
	rm -rf dist dist.tmp build
