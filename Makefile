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

.PHONY: all deno deps check fmt lint test test-deps unit fuzz soak demo bench bench-boot install deb clean

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

# Rebuilt only when an input changed, so `make install` (often as root) after
# `make` installs what was built.
dist/isboot: $(DENO) node_modules/.deno/.setup-cache.bin $(SOURCES) scripts/build.sh
	scripts/build.sh

fmt: deps
	$(DENO) fmt

# Static checks; check-imports holds the imports to the layer table of
# docs/architecture.md (no cycle, nothing up the table, nothing from tests/).
check: deps
	$(DENO) fmt --check
	$(DENO) lint
	$(DENO) check main.ts src/ peers/ tests/ bench/ scripts/
	$(DENO) run --allow-read --allow-write --allow-run scripts/check-imports.ts

test-deps:
	scripts/test-deps.sh

# The whole suite: static checks, then every test (real peers included).
test: test-deps check dist/isboot
	ISBOOT_BIN=$(CURDIR)/dist/isboot scripts/run-tests.sh tests/

# The runs kept out of `make test` for their time (their names say "(make
# soak)"): the four e2e boots of the harness's own images, the network case
# of a static ifupdown stanza, 30 of the 48 fault-matrix rows, the live
# package upgrade by apt in a booted root, and the memory-pressure boots of 4
# minutes (no swap; swap on a local disk).
# `make test` proves the same paths with the user-path boots (package, make
# install, dracut; the package boot's live takeover by `isboot takeover`) and
# the other rows.
soak: test-deps dist/isboot
	ISBOOT_SOAK=1 ISBOOT_BIN=$(CURDIR)/dist/isboot scripts/run-tests.sh --filter "make soak" \
	  tests/e2e/ tests/faults/matrix_test.ts

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
# and both initramfs hooks where dracut and initramfs-tools look for them. The
# hooks get the executable's installed path (without DESTDIR) written in:
# mkinitramfs and dracut run them with a PATH that has no /usr/local/bin.
# Also the ifupdown hook that keeps the boot NIC up in the booted system, and
# the modprobe.d line that keeps iscsi_ibft unloaded while isboot serves.
DRACUT_MODULES_DIR    ?= /usr/lib/dracut/modules.d
INITRAMFS_TOOLS_DIR   ?= /usr/share/initramfs-tools
IFUPDOWN_DIR          ?= /etc/network
MODPROBE_DIR          ?= /etc/modprobe.d
ISBOOT_INSTALLED      := $(PREFIX)/bin/isboot
HOOK_FILES := dracut/95isboot/module-setup.sh dracut/95isboot/isboot-parse.sh \
  dracut/95isboot/isboot-run.sh initramfs-tools/hooks/isboot \
  initramfs-tools/scripts/local-top/isboot
install: dist/isboot
	@case '$(ISBOOT_INSTALLED)' in /*) ;; *) echo "make install: PREFIX must be an absolute path" >&2; exit 2;; esac
	@if [ -f dist/isboot.js ]; then \
	  install -d $(DESTDIR)$(PREFIX)/lib/isboot $(DESTDIR)$(PREFIX)/bin && \
	  install -m 0755 dist/deno dist/isboot $(DESTDIR)$(PREFIX)/lib/isboot/ && \
	  install -m 0644 dist/isboot.js $(DESTDIR)$(PREFIX)/lib/isboot/ && \
	  ln -sfn ../lib/isboot/isboot $(DESTDIR)$(PREFIX)/bin/isboot; \
	else \
	  install -D -m 0755 dist/isboot $(DESTDIR)$(PREFIX)/bin/isboot; \
	fi
	install -D -m 0644 man/isboot.8 $(DESTDIR)$(PREFIX)/share/man/man8/isboot.8
	install -d $(DESTDIR)$(DRACUT_MODULES_DIR)/95isboot \
	  $(DESTDIR)$(INITRAMFS_TOOLS_DIR)/hooks $(DESTDIR)$(INITRAMFS_TOOLS_DIR)/scripts/local-top
	@set -e; for f in $(HOOK_FILES); do \
	  case $$f in \
	  dracut/*) to=$(DESTDIR)$(DRACUT_MODULES_DIR)/$${f#dracut/} ;; \
	  *) to=$(DESTDIR)$(INITRAMFS_TOOLS_DIR)/$${f#initramfs-tools/} ;; \
	  esac; \
	  echo "install initramfs-hook/$$f -> $$to (isboot: $(ISBOOT_INSTALLED))"; \
	  sed "s|^isboot_installed=@ISBOOT_BIN@\$$|isboot_installed='$(ISBOOT_INSTALLED)'|" \
	    initramfs-hook/$$f > $$to.tmp; \
	  ! grep -q '@ISBOOT_BIN@$$' $$to.tmp || { echo "make install: $$to: placeholder left" >&2; exit 1; }; \
	  chmod 0755 $$to.tmp && mv -f $$to.tmp $$to; \
	done
# The booted system's network stacks: a line from ifupdown's pre-down hook
# when someone runs ifdown on a link that carries the root disk (the daemon's
# hand-off under /run keeps shutdown from running ifdown on it; networkd and
# NetworkManager get their files there too: nothing to install for them).
	install -D -m 0755 initramfs-hook/ifupdown/if-down.d/isboot \
	  $(DESTDIR)$(IFUPDOWN_DIR)/if-down.d/isboot
# The kernel initiator must not see the firmware target while isboot serves it.
	install -D -m 0644 initramfs-hook/modprobe.d/isboot.conf $(DESTDIR)$(MODPROBE_DIR)/isboot.conf

# The Debian package dist/isboot_VERSION_amd64.deb: `make install
# DESTDIR=... PREFIX=/usr` staged, packed by dpkg-deb (docs/boot.md, "The
# Debian package").
VERSION := $(shell sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' deno.json | head -1)
DEB     := dist/isboot_$(VERSION)_amd64.deb
deb: $(DEB)
$(DEB): dist/isboot scripts/deb.sh $(wildcard packaging/deb/*) man/isboot.8 README.md Makefile \
  $(addprefix initramfs-hook/,$(HOOK_FILES)) initramfs-hook/ifupdown/if-down.d/isboot \
  initramfs-hook/modprobe.d/isboot.conf
	scripts/deb.sh

# Performance (never part of `make test`): installs bench/deps.apt, then runs the
# CRC32C study and isboot serve against qemu-nbd (libiscsi) and the ceilings;
# results go to docs/bench/. BENCH_ARGS=--quick for a short development run.
bench: dist/isboot
	bench/bench.sh $(BENCH_ARGS)

# Boot time (never part of `make test`; root, qemu, tgtd, debootstrap as for the
# e2e tests): the same Debian root booted from the same tgtd LUN by iPXE's iBFT,
# once with Debian's initramfs-tools + open-iscsi (ISCSI_AUTO=true), once with
# isboot from its install steps; BENCH_BOOT_N boots of each (default 3),
# alternating. Stage medians, image sizes and the daemon's idle cost go to
# docs/bench/boot.{json,md,svg}. ~2-3 min a boot under TCG. The script is
# tests/e2e/boot_bench.ts: it is built on the e2e harness, and bench/ never imports tests/.
bench-boot: test-deps dist/isboot
	$(DENO) run -A tests/e2e/boot_bench.ts

clean:
	rm -rf dist dist.tmp build
