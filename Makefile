# stereo - one non-recursive Makefile: Kconfig (kconfiglib), build, test, bench, fuzz, rootfs.
# `make` leaves the static binary at ./stereo. See README.md for every target.

PY        := /usr/bin/python3
CC        ?= gcc
CLANG     ?= clang
KCONFIG_ENV := KCONFIG_CONFIG=.config srctree=$(CURDIR)

CPPFLAGS  := -I. -Igenerated -Icommon -I/usr/include/libnl3 -DJSMN_STRICT -DJSMN_PARENT_LINKS -D_GNU_SOURCE
WFLAGS    := -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter
CFLAGS    ?= -O2
CFLAGS    += $(WFLAGS) -ffunction-sections -fdata-sections -fno-plt -MMD -MP
ASAN_CFLAGS := $(WFLAGS) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined -MMD -MP
LDFLAGS   += -Wl,--gc-sections
NL_LIBS   := $(shell pkg-config --static --libs libnl-route-3.0 2>/dev/null || echo -lnl-route-3 -lnl-3 -lpthread)

.DEFAULT_GOAL := all
DECL_SRCS := $(wildcard applets/*.c applets/*/*.c init/*.c)

# ---- configuration -------------------------------------------------------------------
generated/.stamp: $(DECL_SRCS) scripts/gen-applets.sh
	@sh scripts/gen-applets.sh generated
	@touch $@
generated/Kconfig.applets generated/applets.mk generated/applets.h generated/help.h generated/applet_protos.h: generated/.stamp
	@true

# No .config: all defaults (busybox's meaning of defconfig: every applet on).
.config: generated/Kconfig.applets
	@if [ -f .config ]; then $(KCONFIG_ENV) $(PY) -m olddefconfig Kconfig >/dev/null; \
	 else $(KCONFIG_ENV) $(PY) -m alldefconfig Kconfig >/dev/null; fi
	@touch $@

generated/autoconf.h generated/auto.conf: .config generated/Kconfig.applets
	@$(KCONFIG_ENV) $(PY) -m genconfig --header-path generated/autoconf.h \
		--config-out generated/auto.conf Kconfig
	@touch generated/autoconf.h generated/auto.conf

# The user-facing targets install their Debian packages first (idempotent, quick when present),
# before anything below needs kconfiglib or the libraries.
ifneq ($(filter test test-asan run bench fuzz test-fuzz rootfs vm,$(MAKECMDGOALS)),)
DEPS_OUT := $(shell sh scripts/deps.sh >&2; echo $$?)
ifneq ($(DEPS_OUT),0)
$(error installing Debian packages failed (scripts/deps.sh))
endif
endif

CONFIG_TARGETS := defconfig menuconfig oldconfig olddefconfig savedefconfig allnoconfig clean distclean deps
ifeq ($(filter $(CONFIG_TARGETS),$(MAKECMDGOALS)),)
include generated/auto.conf
include generated/applets.mk
endif

defconfig: generated/Kconfig.applets
	$(KCONFIG_ENV) $(PY) -m alldefconfig Kconfig
menuconfig: generated/Kconfig.applets
	$(KCONFIG_ENV) $(PY) -m menuconfig Kconfig
oldconfig: generated/Kconfig.applets
	$(KCONFIG_ENV) $(PY) -m oldconfig Kconfig
olddefconfig: generated/Kconfig.applets
	$(KCONFIG_ENV) $(PY) -m olddefconfig Kconfig
allnoconfig: generated/Kconfig.applets
	$(KCONFIG_ENV) $(PY) -m allnoconfig Kconfig
savedefconfig: generated/Kconfig.applets
	$(KCONFIG_ENV) $(PY) -m savedefconfig --kconfig Kconfig --out defconfig
	@echo "minimal config written to ./defconfig"

# ---- build ---------------------------------------------------------------------------
# an applets/*.c that declares no applet is code some applets share (cli.c); --gc-sections
# drops it when no applet using it is built
LPAREN      := (
SHARED_SRCS := $(shell grep -L '^APPLET$(LPAREN)' applets/*.c)
COMMON_SRCS := $(filter-out common/main.c,$(wildcard common/*.c))
APPLET_SRCS := $(sort $(src-y) $(SHARED_SRCS))
SRCS        := common/main.c $(COMMON_SRCS) $(APPLET_SRCS)
LIBS        := $(if $(CONFIG_INIT_NET),$(NL_LIBS))
STATIC_FLAG := $(if $(CONFIG_STATIC),-static)

OBJS      := $(SRCS:%.c=build/obj/%.o)
ASAN_OBJS := $(SRCS:%.c=build-asan/obj/%.o)
COMMON_OBJS      := $(COMMON_SRCS:%.c=build/obj/%.o)
ASAN_COMMON_OBJS := $(COMMON_SRCS:%.c=build-asan/obj/%.o)
TEST_HELPERS := $(patsubst tests/helpers/%.c,%,$(wildcard tests/helpers/*.c))

all: stereo

build/obj/%.o: %.c generated/autoconf.h generated/applets.h
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<
build-asan/obj/%.o: %.c generated/autoconf.h generated/applets.h
	@mkdir -p $(dir $@)
	@echo "  CC-ASAN $<"
	@$(CC) $(CPPFLAGS) $(ASAN_CFLAGS) -c -o $@ $<

stereo: $(OBJS)
	@echo "  LD      $@"
	@$(CC) $(STATIC_FLAG) $(LDFLAGS) -s -o $@ $(OBJS) $(LIBS) 2> build/link.log || { cat build/link.log; exit 1; }
	@grep -v -e 'getaddrinfo' -e 'getprotoby' -e 'in statically linked' -e ': in function' build/link.log >&2 || true

build-asan/stereo: $(ASAN_OBJS)
	@echo "  LD-ASAN $@"
	@$(CC) -fsanitize=address,undefined -o $@ $(ASAN_OBJS) $(LIBS:-lpthread=) -lpthread

asan: build-asan/stereo $(TEST_HELPERS:%=build-asan/t/%)

build/t/%: tests/helpers/%.c $(COMMON_OBJS)
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	@$(CC) $(CPPFLAGS) $(WFLAGS) -O2 -g -o $@ $< $(COMMON_OBJS) -lpthread
build-asan/t/%: tests/helpers/%.c $(ASAN_COMMON_OBJS)
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	@$(CC) $(CPPFLAGS) $(ASAN_CFLAGS) -fsanitize=address,undefined -o $@ $< $(ASAN_COMMON_OBJS) -lpthread

helpers: $(TEST_HELPERS:%=build/t/%)

size: stereo
	@size stereo; ls -l stereo | awk '{printf "stereo: %d bytes (%.2f MiB)\n", $$5, $$5/1048576}'

compile_commands.json:
	$(MAKE) clean && bear -- $(MAKE) all helpers

static: stereo

# ---- run, test, bench ----------------------------------------------------------------
deps:
	@sh scripts/deps.sh

run: deps stereo
	@sh scripts/run.sh

test: deps stereo helpers asan
	@sh scripts/run-tests.sh

test-asan: deps asan helpers stereo
	@STEREO_SUITES=asan sh scripts/run-tests.sh

FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SRCS := $(filter-out common/log.c,$(COMMON_SRCS))
fuzz: deps generated/autoconf.h $(FUZZ_TARGETS:%=build/fuzz/%)
build/fuzz/%: tests/fuzz/%.c $(COMMON_SRCS) generated/autoconf.h
	@mkdir -p $(dir $@)
	$(CLANG) $(CPPFLAGS) -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -o $@ $< $(COMMON_SRCS)
test-fuzz: fuzz
	@sh scripts/run-fuzz.sh $(FUZZ_TARGETS)

bench: deps stereo helpers
	@sh scripts/run-bench.sh

clean:
	rm -rf build build-asan stereo generated/*.h generated/*.mk generated/auto.conf generated/.stamp

distclean: clean
	rm -rf generated .config .config.old

-include $(OBJS:.o=.d) $(ASAN_OBJS:.o=.d)
.PHONY: all asan helpers size static deps run test test-asan fuzz test-fuzz bench clean distclean \
	defconfig menuconfig oldconfig olddefconfig savedefconfig allnoconfig

# ---- guest image and VM (rootfs/) ---------------------------------------------------
kernel: deps
	@sh rootfs/kernel.sh
rootfs: deps stereo
	@sh rootfs/build.sh
vm: rootfs
	@sh rootfs/vm.sh
.PHONY: kernel rootfs vm
