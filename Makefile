# isboot build, test and install. Everything runs with the pinned Deno that
# `make` installs from the npm registry into .tools/ (git-ignored).
DENO_VERSION := 2.9.6
TOOLS        := .tools
DENO         := $(TOOLS)/node_modules/@deno/linux-x64-glibc/deno
PREFIX       ?= /usr/local
DESTDIR      ?=
FUZZ_RUNS    ?= 100000

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
	$(DENO) check main.ts src/ tests/

test-deps:
	scripts/test-deps.sh

# The whole suite: static checks, then every test (real peers included).
test: test-deps check dist/isboot
	ISBOOT_BIN=$(CURDIR)/dist/isboot scripts/run-tests.sh tests/

# Property and fuzz tests at full strength.
fuzz: deps
	ISBOOT_FUZZ_RUNS=$(FUZZ_RUNS) scripts/run-tests.sh --filter '/fuzz|property/' tests/

demo: dist/isboot
	dist/isboot ibft --source tests/fixtures/ibft/ipxe-bios-mutual-chap.bin

# Performance (never part of `make test`): installs bench/deps.apt, then runs the
# CRC32C study and isboot serve against qemu-nbd (libiscsi) and the ceilings;
# results go to docs/bench/. BENCH_ARGS=--quick for a short development run.
bench: dist/isboot
	bench/bench.sh $(BENCH_ARGS)

clean:
	rm -rf dist dist.tmp build
