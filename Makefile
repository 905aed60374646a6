# stereo - one non-recursive Makefile: Kconfig (kconfiglib), build, test, bench, fuzz, rootfs.
# `make` leaves the static binary at ./stereo. See README.md for every target.

PY        := /usr/bin/python3
CC        ?= gcc
CLANG     ?= clang
# O=DIR builds a second configuration beside the default one: DIR/.config, DIR/generated
# (autoconf.h, auto.conf), DIR/build, DIR/build-asan and DIR/stereo. `make host` and
# `make guest` use it with configs/host.config and configs/guest.config as the seed.
O         ?=
P         := $(if $(O),$(O)/,)
KCONFIG_ENV := KCONFIG_CONFIG=$(P).config srctree=$(CURDIR)

CPPFLAGS  := -I. $(if $(O),-I$(O)/generated) -Igenerated -Icommon -I/usr/include/libnl3 -DJSMN_STRICT -DJSMN_PARENT_LINKS -D_GNU_SOURCE
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

# No .config: all defaults (busybox's meaning of defconfig: every applet on). With SEED (a
# configs/*.config), the .config is that seed completed with defaults, redone when it changes.
ifneq ($(SEED),)
$(P).config: $(SEED) generated/Kconfig.applets
	@mkdir -p $(dir $@)
	@cp $(SEED) $@
	@$(KCONFIG_ENV) $(PY) -m olddefconfig Kconfig >/dev/null
	@touch $@
else
$(P).config: generated/Kconfig.applets
	@if [ -f $@ ]; then $(KCONFIG_ENV) $(PY) -m olddefconfig Kconfig >/dev/null; \
	 else $(KCONFIG_ENV) $(PY) -m alldefconfig Kconfig >/dev/null; fi
	@touch $@
endif

$(P)generated/autoconf.h $(P)generated/auto.conf: $(P).config generated/Kconfig.applets
	@mkdir -p $(P)generated
	@$(KCONFIG_ENV) $(PY) -m genconfig --header-path $(P)generated/autoconf.h \
		--config-out $(P)generated/auto.conf Kconfig
	@touch $(P)generated/autoconf.h $(P)generated/auto.conf

# The user-facing targets install their Debian packages first (idempotent, quick when present),
# before anything below needs kconfiglib or the libraries.
ifneq ($(filter test test-asan run bench fuzz test-fuzz rootfs vm,$(MAKECMDGOALS)),)
DEPS_OUT := $(shell sh scripts/deps.sh >&2; echo $$?)
ifneq ($(DEPS_OUT),0)
$(error installing Debian packages failed (scripts/deps.sh))
endif
endif

# Every other goal that builds (plain `make`, size, asan, helpers...) installs nothing but says in
# one line what is missing, instead of failing later inside kconfiglib or the compiler.
ifeq ($(filter test test-asan run bench fuzz test-fuzz rootfs vm deps clean distclean,$(MAKECMDGOALS)),)
DEPS_CHECK := $(shell sh scripts/deps.sh --check >&2; echo $$?)
ifneq ($(DEPS_CHECK),0)
$(error stopping: build dependencies are missing (see the line above))
endif
endif

CONFIG_TARGETS := defconfig menuconfig oldconfig olddefconfig savedefconfig allnoconfig clean distclean deps \
	host guest host-asan guest-asan
# Include the configuration unless every goal is one of these (`make asan host` still needs it).
ifneq ($(filter-out $(CONFIG_TARGETS),$(MAKECMDGOALS))$(if $(MAKECMDGOALS),,all),)
include $(P)generated/auto.conf
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
LIBS        := $(if $(CONFIG_INIT_NET),$(NL_LIBS)) $(if $(CONFIG_STEREO_UFFD_REMOTE),-lcurl)
STATIC_FLAG := $(if $(CONFIG_STATIC),-static)

OBJS      := $(SRCS:%.c=$(P)build/obj/%.o)
ASAN_OBJS := $(SRCS:%.c=$(P)build-asan/obj/%.o)
COMMON_OBJS      := $(COMMON_SRCS:%.c=build/obj/%.o)
ASAN_COMMON_OBJS := $(COMMON_SRCS:%.c=build-asan/obj/%.o)
TEST_HELPERS := $(patsubst tests/helpers/%.c,%,$(wildcard tests/helpers/*.c))

all: $(P)stereo

$(P)build/obj/%.o: %.c $(P)generated/autoconf.h generated/applets.h
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<
$(P)build-asan/obj/%.o: %.c $(P)generated/autoconf.h generated/applets.h
	@mkdir -p $(dir $@)
	@echo "  CC-ASAN $<"
	@$(CC) $(CPPFLAGS) $(ASAN_CFLAGS) -c -o $@ $<

$(P)stereo: $(OBJS)
	@echo "  LD      $@"
	@$(CC) $(STATIC_FLAG) $(LDFLAGS) -s -o $@ $(OBJS) $(LIBS) 2> $(P)build/link.log || { cat $(P)build/link.log; exit 1; }
	@grep -v -e 'getaddrinfo' -e 'getprotoby' -e 'in statically linked' -e ': in function' $(P)build/link.log >&2 || true

$(P)build-asan/stereo: $(ASAN_OBJS)
	@echo "  LD-ASAN $@"
	@$(CC) -fsanitize=address,undefined -o $@ $(ASAN_OBJS) $(LIBS:-lpthread=) -lpthread

asan: $(P)build-asan/stereo $(TEST_HELPERS:%=build-asan/t/%)

# The two deployment configurations (docs/stereo-uffd.md "Building"): the guest one (init,
# stereod, the guest CLIs; static, small: what `make rootfs` puts in the image) and the host
# one (stereo-uffd with remote layers over libcurl, stereo-host; dynamically linked).
# The -asan variants come after their configuration's build: both write DIR/.config and
# DIR/generated, which two sub-makes at once (make -j) must not; the shared generated/ is made
# once, before any of them.
host: generated/.stamp
	@$(MAKE) --no-print-directory O=build-host SEED=configs/host.config build-host/stereo
host-asan: host generated/.stamp
	@$(MAKE) --no-print-directory O=build-host SEED=configs/host.config build-host/build-asan/stereo
guest: generated/.stamp
	@$(MAKE) --no-print-directory O=build-guest SEED=configs/guest.config build-guest/stereo
guest-asan: guest generated/.stamp
	@$(MAKE) --no-print-directory O=build-guest SEED=configs/guest.config build-guest/build-asan/stereo

build/t/%: tests/helpers/%.c $(COMMON_OBJS)
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	@$(CC) $(CPPFLAGS) $(WFLAGS) -O2 -g -o $@ $< $(COMMON_OBJS) -lpthread
build-asan/t/%: tests/helpers/%.c $(ASAN_COMMON_OBJS)
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	@$(CC) $(CPPFLAGS) $(ASAN_CFLAGS) -fsanitize=address,undefined -o $@ $< $(ASAN_COMMON_OBJS) -lpthread

helpers: $(TEST_HELPERS:%=build/t/%)

size: stereo guest host
	@for b in stereo build-guest/stereo build-host/stereo; do \
		ls -l $$b | awk '{printf "%s: %d bytes (%.2f MiB)\n", $$9, $$5, $$5/1048576}'; done

compile_commands.json:
	$(MAKE) clean && bear -- $(MAKE) all helpers

static: stereo

# ---- run, test, bench ----------------------------------------------------------------
deps:
	@sh scripts/deps.sh

run: deps stereo
	@sh scripts/run.sh

test: deps stereo helpers asan host host-asan
	@sh scripts/run-tests.sh

test-asan: deps asan helpers stereo host-asan
	@STEREO_SUITES=asan sh scripts/run-tests.sh

FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SRCS := $(filter-out common/log.c,$(COMMON_SRCS))
fuzz: deps generated/autoconf.h $(FUZZ_TARGETS:%=build/fuzz/%)
build/fuzz/%: tests/fuzz/%.c $(COMMON_SRCS) generated/autoconf.h
	@mkdir -p $(dir $@)
	$(CLANG) $(CPPFLAGS) -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -o $@ $< $(COMMON_SRCS)
test-fuzz: fuzz
	@sh scripts/run-fuzz.sh $(FUZZ_TARGETS)

bench: deps stereo helpers host
	@sh scripts/run-bench.sh

clean:
	rm -rf build build-asan stereo generated/*.h generated/*.mk generated/auto.conf generated/.stamp \
		build-host build-guest

distclean: clean
	rm -rf generated .config .config.old

-include $(OBJS:.o=.d) $(ASAN_OBJS:.o=.d)
.PHONY: all asan helpers size static deps run test test-asan fuzz test-fuzz bench clean distclean \
	defconfig menuconfig oldconfig olddefconfig savedefconfig allnoconfig host host-asan guest guest-asan

# ---- guest image and VM (rootfs/) ---------------------------------------------------
kernel: deps
	@sh rootfs/kernel.sh
rootfs: deps guest
	@STEREO_BIN=$(CURDIR)/build-guest/stereo sh rootfs/build.sh
vm: rootfs
	@sh rootfs/vm.sh $(VM_ARGS)
.PHONY: kernel rootfs vm
