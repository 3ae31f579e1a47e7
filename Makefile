# envcrypt top-level build.  See README.md and Documentation/.
#
#   make            build kmod/dm-envcrypt.ko (for KVER) and build/envcryptctl
#   make test-programs   the test-only programs in build/test/ (envcryptctl
#                   with test hooks, envcrypt-test-dk-dump); check and demo
#                   build them, make and make install never do
#   make check      every test: lint, helper unit tests, host tests, guest tests
#                   on each kernel of the matrix; ends with "N passed, N failed"
#   make check-debian   the booted-Debian tests (selftests/debian/): a Debian
#                   12 image with systemd and the envcrypt package, booted
#                   on each kernel of the matrix; check runs it on the first
#                   kernel of the matrix only (CI time)
#   make demo       the end-to-end job in a guest, narrated
#   make bench      performance comparison with dm-crypt in a guest
#   make fuzz       each libFuzzer target of helper/fuzz/ for FUZZ_SECONDS (600)
#   make kmod-next  compile check of the modules against the newest kernel
#                   headers of Debian trixie-backports, in a cached trixie
#                   root (build/kbuild-next/); also a suite of make check
#   make check-next the runtime check on that newest kernel: kmod-next, then
#                   the cipher-path guest tests in a guest booting it
#                   (scripts/check-next.sh); not part of make check
#   make deb        Debian packages envcrypt and envcrypt-dkms in build/deb/
#   make deps       install the Debian packages all of the above need (root)
#   make install / uninstall   (DESTDIR, PREFIX)

SHELL := /bin/bash
TOP := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
BUILD := $(TOP)/build

# Compiler cache: the helper's two full builds (gcc, and clang's sanitizer
# and fuzzer build) are most of a fresh clone's build time, so every CMake
# build goes through ccache when it is installed (make deps does), with its
# cache in CCACHE_DIR, shared by every clone on the host: paths under TOP
# are hashed relative to it.  ENVCRYPT_CCACHE=0 builds without it.
ifneq ($(ENVCRYPT_CCACHE),0)
ifneq ($(shell command -v ccache 2>/dev/null),)
export CMAKE_C_COMPILER_LAUNCHER := ccache
export CMAKE_CXX_COMPILER_LAUNCHER := ccache
export CCACHE_DIR ?= /var/cache/envcrypt/ccache
export CCACHE_BASEDIR := $(TOP)
export CCACHE_NOHASHDIR := true
export CCACHE_MAXSIZE ?= 4G
endif
endif

# KVER: the running kernel when its build tree exists, else the newest
# installed one.
KVER ?= $(shell if [ -d /lib/modules/$$(uname -r)/build ]; then uname -r; \
	else ls -1d /lib/modules/*/build 2>/dev/null | sort -V | tail -n1 | cut -d/ -f4; fi)
KDIR ?= /lib/modules/$(KVER)/build
# The kernel matrix the guest tests run on: newest installed 6.1 and 6.12.
KERNELS ?= $(shell $(TOP)/scripts/kernels.sh)

PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all kmod kmod-matrix kmod-next check-next helper helper-bin deb test-programs check check-only check-debian demo demo-only bench deps lint install uninstall clean

all: kmod helper

kmod:
	@test -n "$(KVER)" || { echo "make: no kernel build tree in /lib/modules/*/build; run make deps" >&2; exit 1; }
	$(MAKE) -C $(KDIR) M=$(TOP)/kmod W=1 modules

# One module per kernel of the matrix, in build/kmod/<kver>/, for the guests,
# and the test-only modules of kmod-test/ in build/kmod-test/<kver>/ (never
# installed).
kmod-matrix:
	@for k in $(KERNELS); do \
		$(MAKE) -C /lib/modules/$$k/build M=$(TOP)/kmod W=1 clean >/dev/null && \
		$(MAKE) -C /lib/modules/$$k/build M=$(TOP)/kmod W=1 modules || exit 1; \
		mkdir -p $(BUILD)/kmod/$$k && cp $(TOP)/kmod/dm-envcrypt.ko $(BUILD)/kmod/$$k/ || exit 1; \
		$(MAKE) -C /lib/modules/$$k/build M=$(TOP)/kmod-test W=1 clean >/dev/null && \
		$(MAKE) -C /lib/modules/$$k/build M=$(TOP)/kmod-test W=1 modules || exit 1; \
		mkdir -p $(BUILD)/kmod-test/$$k && cp $(TOP)/kmod-test/*.ko $(BUILD)/kmod-test/$$k/ || exit 1; \
	done

# The same three module directories (kmod/, kmod-test/, bench/xtsbench/),
# W=1 and -Werror, against the newest linux-headers-*-amd64 of Debian
# trixie-backports: they need trixie's gcc and kbuild tools, so the build
# runs in a trixie root that scripts/kbuild-next.sh makes with mmdebstrap
# and caches in build/kbuild-next/.  A compile check only: TAP output.
kmod-next:
	$(TOP)/scripts/kbuild-next.sh

# The target at run time on that kernel: make kmod-next, then
# scripts/kernel-next.sh unpacks the same kernel into build/kernel-next/ and
# selftests/run.sh --kernel-dir boots it for the guest tests of the cipher
# path.  Not part of make check (a download of about 120 MiB and a guest).
check-next:
	$(TOP)/scripts/check-next.sh

helper:
	cmake -S $(TOP)/helper -B $(BUILD)/helper -DENVCRYPT_BIN_DIR=$(BUILD) >/dev/null
	cmake --build $(BUILD)/helper -j$$(nproc)

# envcryptctl alone, without the unit tests: what install and the packages need.
helper-bin:
	cmake -S $(TOP)/helper -B $(BUILD)/helper -DENVCRYPT_BIN_DIR=$(BUILD) >/dev/null
	cmake --build $(BUILD)/helper -j$$(nproc) --target envcryptctl

# Same build tree, same objects: only the link differs (helper/CMakeLists.txt).
test-programs: helper
	cmake --build $(BUILD)/helper -j$$(nproc) --target envcryptctl-test envcrypt-test-dk-dump

# deps first, then a sub-make: KERNELS must be read after the kernels of
# the matrix are installed.
check: deps
	$(MAKE) check-only

check-only: kmod-matrix helper test-programs asan
	$(TOP)/scripts/check.sh $(KERNELS)

lint:
	$(TOP)/scripts/lint.sh

# A Debian 12 image (scripts/debian-image.sh, cached in build/debian/) with
# the package of make deb, booted with systemd on each kernel of the matrix
# (selftests/debian-run.sh); TAP.  make check runs scripts/check-debian.sh
# for each test on each kernel after tests/host/test_deb.sh has made the
# packages (Documentation/dev-tools/testing.rst).
check-debian: kmod-matrix deb helper-bin
	$(TOP)/scripts/check-debian.sh $(KERNELS)

demo: deps
	$(MAKE) demo-only

demo-only: kmod-matrix helper test-programs
	$(TOP)/scripts/demo.sh

bench: kmod-matrix helper
	$(TOP)/bench/run.sh $(KERNELS)

deps:
	$(TOP)/scripts/deps.sh

# The one version of the helper, the module, its DKMS package and the
# Debian packages (Documentation/admin-guide/packaging.rst).
VERSION := $(shell cat $(TOP)/VERSION)
DKMS_NAME := dm-envcrypt
DKMS_VERSION := $(VERSION)
DKMS_SRC := /usr/src/$(DKMS_NAME)-$(DKMS_VERSION)

# Where install puts things.  udev, systemd and initramfs-tools read only
# their own directories, so rules, units, the generator and the initramfs
# hook and script do not follow PREFIX.
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/envcrypt
SYSCONFDIR ?= /etc
UDEVRULESDIR ?= /lib/udev/rules.d
SYSTEMDUNITDIR ?= /lib/systemd/system
SYSTEMDGENERATORDIR ?= /lib/systemd/system-generators
INITRAMFSDIR ?= /usr/share/initramfs-tools
SUBST = sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@UNITDIR@|$(SYSTEMDUNITDIR)|g'
UNITS := envcrypt-attach@.service envcrypt.target envcrypt-remote.target \
	envcrypt-preflight.service envcrypt-preflight.timer

# Installs the helper, its man pages, udev rules, systemd units and
# generator, the initramfs-tools hook and local-top script, documentation and examples (an existing /etc/envcrypttab or
# envcrypt.conf is never overwritten), and registers the module source with
# DKMS, which builds it for every installed kernel that has headers (a
# warning names each kernel without them) and again on every kernel
# upgrade (scripts/dkms-install.sh).  Without DESTDIR, it must run as root
# and dkms must be installed: both are checked before any file is copied,
# so a failed check leaves nothing half-installed.  With DESTDIR (packaging), files are only
# staged; DKMS and the udev/systemd reloads are left to the package.
MAN5 := envcrypttab.5 envcrypt.conf.5
MAN8 := envcryptctl.8
install: helper-bin
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" != 0 ]; then \
		echo "make install: run as root (it writes to /lib, /etc and /usr/src), or stage with DESTDIR=; nothing was installed" >&2; \
		exit 1; \
	fi
	@if [ -z "$(DESTDIR)" ] && ! command -v dkms >/dev/null; then \
		echo "make install: dkms is not installed (apt-get install dkms, or make deps); nothing was installed" >&2; \
		exit 1; \
	fi
	install -D -m 0755 $(BUILD)/envcryptctl $(DESTDIR)$(SBINDIR)/envcryptctl
	install -d $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 $(addprefix $(TOP)/Documentation/admin-guide/,$(MAN5)) $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 $(addprefix $(TOP)/Documentation/admin-guide/,$(MAN8)) $(DESTDIR)$(MANDIR)/man8/
	install -d $(DESTDIR)$(UDEVRULESDIR) $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSTEMDGENERATORDIR)
	$(SUBST) $(TOP)/helper/udev/61-envcrypt.rules >$(DESTDIR)$(UDEVRULESDIR)/61-envcrypt.rules
	chmod 0644 $(DESTDIR)$(UDEVRULESDIR)/61-envcrypt.rules
	for unit in $(UNITS); do \
		$(SUBST) $(TOP)/helper/systemd/$$unit >$(DESTDIR)$(SYSTEMDUNITDIR)/$$unit && \
		chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$unit || exit 1; \
	done
	$(SUBST) $(TOP)/helper/systemd/envcrypt-generator >$(DESTDIR)$(SYSTEMDGENERATORDIR)/envcrypt-generator
	chmod 0755 $(DESTDIR)$(SYSTEMDGENERATORDIR)/envcrypt-generator
	install -d $(DESTDIR)$(INITRAMFSDIR)/hooks $(DESTDIR)$(INITRAMFSDIR)/scripts/local-top
	$(SUBST) $(TOP)/helper/initramfs/hooks/envcrypt >$(DESTDIR)$(INITRAMFSDIR)/hooks/envcrypt
	install -m 0755 $(TOP)/helper/initramfs/scripts/local-top/envcrypt \
		$(DESTDIR)$(INITRAMFSDIR)/scripts/local-top/envcrypt
	chmod 0755 $(DESTDIR)$(INITRAMFSDIR)/hooks/envcrypt
	install -D -m 0644 $(TOP)/helper/examples/envcrypt.conf $(DESTDIR)$(DOCDIR)/examples/envcrypt.conf
	install -D -m 0644 $(TOP)/helper/examples/envcrypttab $(DESTDIR)$(DOCDIR)/examples/envcrypttab
	install -m 0644 $(wildcard $(TOP)/Documentation/admin-guide/*.rst) $(DESTDIR)$(DOCDIR)/
	[ -e $(DESTDIR)$(SYSCONFDIR)/envcrypttab ] || \
		install -D -m 0644 $(TOP)/helper/examples/envcrypttab $(DESTDIR)$(SYSCONFDIR)/envcrypttab
	[ -e $(DESTDIR)$(SYSCONFDIR)/envcrypt/envcrypt.conf ] || \
		install -D -m 0644 $(TOP)/helper/examples/envcrypt.conf $(DESTDIR)$(SYSCONFDIR)/envcrypt/envcrypt.conf
	install -d $(DESTDIR)$(DKMS_SRC)
	install -m 0644 $(TOP)/kmod/dm-envcrypt.c $(TOP)/kmod/compat.h $(TOP)/kmod/Kbuild \
		$(TOP)/kmod/Makefile $(DESTDIR)$(DKMS_SRC)/
	sed 's/#MODULE_VERSION#/$(DKMS_VERSION)/' $(TOP)/kmod/dkms.conf >$(DESTDIR)$(DKMS_SRC)/dkms.conf
	chmod 0644 $(DESTDIR)$(DKMS_SRC)/dkms.conf
	if [ -z "$(DESTDIR)" ]; then \
		udevadm control --reload 2>/dev/null || true; \
		systemctl daemon-reload 2>/dev/null || true; \
	fi
	if [ -z "$(DESTDIR)" ]; then \
		$(TOP)/scripts/dkms-install.sh $(DKMS_NAME) $(DKMS_VERSION); \
	fi

# Removes what install put there, except /etc/envcrypttab and
# /etc/envcrypt/ (the administrator's, like dpkg's conffiles, and the local
# KMS root key lives there), and unregisters the module from DKMS.
uninstall:
	if [ -z "$(DESTDIR)" ] && command -v dkms >/dev/null; then \
		dkms remove $(DKMS_NAME)/$(DKMS_VERSION) --all 2>/dev/null || true; \
	fi
	rm -f $(DESTDIR)$(SBINDIR)/envcryptctl $(addprefix $(DESTDIR)$(MANDIR)/man8/,$(MAN8)) \
		$(addprefix $(DESTDIR)$(MANDIR)/man5/,$(MAN5))
	rm -f $(DESTDIR)$(UDEVRULESDIR)/61-envcrypt.rules $(DESTDIR)$(SYSTEMDGENERATORDIR)/envcrypt-generator
	rm -f $(DESTDIR)$(INITRAMFSDIR)/hooks/envcrypt $(DESTDIR)$(INITRAMFSDIR)/scripts/local-top/envcrypt
	rm -f $(addprefix $(DESTDIR)$(SYSTEMDUNITDIR)/,$(UNITS))
	rm -rf $(DESTDIR)$(DOCDIR) $(DESTDIR)$(DKMS_SRC)
	if [ -z "$(DESTDIR)" ]; then \
		udevadm control --reload 2>/dev/null || true; \
		systemctl daemon-reload 2>/dev/null || true; \
	fi

# Debian packages envcrypt and envcrypt-dkms (debian/), built with
# dpkg-buildpackage from a copy of the tree in build/deb/envcrypt-<version>/,
# so that everything it writes, the .deb files included, stays in build/deb/
# (Documentation/admin-guide/packaging.rst).  The copy is made afresh each
# time, but its build/ (the helper's objects) is kept and the copied files
# keep their times, so a second make deb only recompiles what changed
# (dpkg-buildpackage -nc); rm -rf build/deb for a build from scratch.
DEB_DIR := $(BUILD)/deb
DEB_SRC := $(DEB_DIR)/envcrypt-$(VERSION)
deb:
	mkdir -p $(DEB_SRC)
	find $(DEB_DIR) -mindepth 1 -maxdepth 1 ! -name envcrypt-$(VERSION) -exec rm -rf {} +
	find $(DEB_SRC) -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
	tar -C $(TOP) --exclude=./build --exclude=./.git --exclude-vcs-ignores -cf - . | tar -C $(DEB_SRC) -xf -
	cd $(DEB_SRC) && dpkg-buildpackage -b -nc -us -uc
	@ls -1 $(DEB_DIR)/*.deb

clean:
	-$(MAKE) -C $(KDIR) M=$(TOP)/kmod clean
	-$(MAKE) -C $(KDIR) M=$(TOP)/kmod-test clean
	rm -rf $(BUILD)

# Sanitizer and fuzz builds (Documentation/dev-tools/testing.rst, "Fuzzing").
# build/asan: the unit tests and the libFuzzer targets of helper/fuzz/,
# built by clang 14 with AddressSanitizer and UndefinedBehaviorSanitizer.
# make fuzz runs each target for FUZZ_SECONDS over its corpus.
FUZZ_SECONDS ?= 600
ASAN_BUILD := $(BUILD)/asan

.PHONY: asan fuzz
asan:
	cmake -S $(TOP)/helper -B $(ASAN_BUILD) -DCMAKE_CXX_COMPILER=clang++-14 \
		-DENVCRYPT_FUZZ=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j$$(nproc) --target envcrypt_unit_tests fuzzers

fuzz: asan
	$(TOP)/scripts/fuzz.sh --seconds $(FUZZ_SECONDS) --jobs 1
