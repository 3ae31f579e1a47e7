#!/bin/bash
# make deb and its two packages, as TAP 13 (Documentation/admin-guide/packaging.rst):
#  - make deb builds envcrypt and envcrypt-dkms in build/deb/ and writes
#    nothing outside build/ (the worktree's git status does not change);
#  - lintian finds no error in either (warnings are shown as diagnostics);
#  - each package holds exactly the expected files, with their modes, owned
#    by root: nothing outside the expected paths (dpkg-deb -c);
#  - the conffiles are /etc/envcrypttab and /etc/envcrypt/envcrypt.conf,
#    the files make install puts there (dpkg-deb -I ... conffiles);
#  - envcrypt activates the update-initramfs trigger and its initramfs hook
#    runs /usr/sbin/envcryptctl;
#  - the maintainer scripts register the module with DKMS and remove it,
#    enable, start and stop no unit, and never touch /etc/envcrypt or
#    /var/lib/envcrypt (key material survives a purge);
#  - dpkg --root installs both into a throw-away root, installs them again
#    (dpkg's upgrade path) and purges them, running the real maintainer
#    scripts against stubs of dkms and deb-systemd-helper: the files, the
#    DKMS calls per kernel, an edited conffile kept, the root key kept;
#  - one version everywhere: VERSION, debian/changelog, both packages, the
#    DKMS source directory and its dkms.conf, the helper's CMake project,
#    envcryptctl --version of the packaged binary, and MODULE_VERSION of
#    kmod/dm-envcrypt.c.
# It runs make deb once and reuses its helper build (build/deb/ keeps it, so
# a second run recompiles nothing).  It does not install the packages into
# a running system: the real DKMS is test_dkms.sh's, systemd and udev the
# booted-Debian tests' (Documentation/admin-guide/packaging.rst, "What is
# tested").
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/host/lib/tap.sh disable=SC1091
. "$TOP/tests/host/lib/tap.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/envcrypt-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DEB_DIR=$TOP/build/deb
started=$SECONDS

# check_eq WHAT EXPECTED SEEN
check_eq() {
	if [ "$2" = "$3" ]; then
		ok "$1"
	else
		not_ok "$1"
		diff <(echo "$2") <(echo "$3") | sed -n 's/^[<>]/&/p' | head -n 40 | diag
		echo "(< expected, > seen)" | diag
	fi
}

echo "TAP version 13"
for tool in dpkg-buildpackage dh dh_dkms lintian; do
	command -v "$tool" >/dev/null || bail "$tool is installed (make deps)"
done

version=$(cat "$TOP/VERSION")
status_before=$(git -C "$TOP" status --porcelain 2>/dev/null)
touch "$WORK/stamp"
if nice make -C "$TOP" deb >"$WORK/make.log" 2>&1; then
	ok "make deb"
else
	not_ok "make deb"
	tail -n 30 "$WORK/make.log" | diag
	tap_finish
	exit 1
fi
echo "make deb took $((SECONDS - started)) s" | diag
check_eq "make deb changes nothing outside build/ (git status)" "$status_before" \
	"$(git -C "$TOP" status --porcelain 2>/dev/null)"

check_eq "make deb writes no package next to the tree (dpkg-buildpackage's ../)" "" \
	"$(find "$TOP/.." -maxdepth 1 -newer "$WORK/stamp" \( -name '*.deb' -o -name '*.changes' -o -name '*.buildinfo' \) 2>/dev/null)"

deb=$DEB_DIR/envcrypt_${version}_$(dpkg --print-architecture).deb
dkms_deb=$DEB_DIR/envcrypt-dkms_${version}_all.deb
for f in "$deb" "$dkms_deb"; do
	if [ -f "$f" ]; then ok "built $(basename "$f")"; else bail "built $(basename "$f")"; fi
done

# lintian: errors fail, warnings and everything else is shown.
lintian --fail-on error --display-info "$deb" "$dkms_deb" >"$WORK/lintian" 2>&1
rc=$?
grep -v 'running with root privileges' "$WORK/lintian" >"$WORK/lintian.tags"
if [ "$rc" = 0 ]; then
	ok "lintian: no error ($(grep -c '^W:' "$WORK/lintian.tags") warnings)"
else
	not_ok "lintian: no error"
fi
diag <"$WORK/lintian.tags"

# contents: "mode owner path" of every file and link, directories left out;
# compressed documentation compared without its .gz.
contents() {
	dpkg-deb -c "$1" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $1, $2, $6 }' |
		sed -E 's#^(.* /usr/share/(doc|man)/.*)\.gz$#\1#' | sort -k3
}
expected=$(
	cat <<EOF
-rw-r--r-- root/root /etc/envcrypt/envcrypt.conf
-rw-r--r-- root/root /etc/envcrypttab
-rw-r--r-- root/root /lib/systemd/system/envcrypt-attach@.service
-rw-r--r-- root/root /lib/systemd/system/envcrypt-preflight.service
-rw-r--r-- root/root /lib/systemd/system/envcrypt-preflight.timer
-rw-r--r-- root/root /lib/systemd/system/envcrypt-remote.target
-rw-r--r-- root/root /lib/systemd/system/envcrypt.target
-rwxr-xr-x root/root /lib/systemd/system-generators/envcrypt-generator
-rw-r--r-- root/root /lib/udev/rules.d/61-envcrypt.rules
-rwxr-xr-x root/root /usr/sbin/envcryptctl
-rwxr-xr-x root/root /usr/share/initramfs-tools/hooks/envcrypt
-rwxr-xr-x root/root /usr/share/initramfs-tools/scripts/local-top/envcrypt
-rw-r--r-- root/root /usr/share/doc/envcrypt/changelog
-rw-r--r-- root/root /usr/share/doc/envcrypt/copyright
-rw-r--r-- root/root /usr/share/doc/envcrypt/examples/envcrypt.conf
-rw-r--r-- root/root /usr/share/doc/envcrypt/examples/envcrypttab
-rw-r--r-- root/root /usr/share/man/man5/envcrypt.conf.5
-rw-r--r-- root/root /usr/share/man/man5/envcrypttab.5
-rw-r--r-- root/root /usr/share/man/man8/envcryptctl.8
EOF
	for doc in "$TOP"/Documentation/admin-guide/*.rst; do
		echo "-rw-r--r-- root/root /usr/share/doc/envcrypt/$(basename "$doc")"
	done
)
check_eq "envcrypt holds exactly the expected files, modes and owners" \
	"$(sort -k3 <<<"$expected")" "$(contents "$deb")"
src=/usr/src/dm-envcrypt-$version
check_eq "envcrypt-dkms holds exactly the module source and dkms.conf" \
	"-rw-r--r-- root/root /usr/share/doc/envcrypt-dkms/changelog
-rw-r--r-- root/root /usr/share/doc/envcrypt-dkms/copyright
-rw-r--r-- root/root $src/Kbuild
-rw-r--r-- root/root $src/Makefile
-rw-r--r-- root/root $src/compat.h
-rw-r--r-- root/root $src/dkms.conf
-rw-r--r-- root/root $src/dm-envcrypt.c" "$(contents "$dkms_deb")"

# The packaged files are the tree's: what make install stages.
mkdir -p "$WORK/root" "$WORK/dkms-root"
dpkg-deb -x "$deb" "$WORK/root"
dpkg-deb -x "$dkms_deb" "$WORK/dkms-root"
same=0
for f in dm-envcrypt.c compat.h Kbuild Makefile; do
	cmp -s "$TOP/kmod/$f" "$WORK/dkms-root$src/$f" || same=1
done
check_eq "the DKMS source is kmod/'s" 0 "$same"
check_eq "the rules and generator run /usr/sbin/envcryptctl, no @SBINDIR@ left" "4 0" \
	"$(cat "$WORK/root/lib/udev/rules.d/61-envcrypt.rules" "$WORK/root/lib/systemd/system-generators/envcrypt-generator" |
		grep -c '/usr/sbin/envcryptctl \(probe\|tab-match\|attach-all\|generate-units\)') $(grep -rl '@SBINDIR@\|@UNITDIR@' "$WORK/root" | wc -l)"
check_eq "the conffile envcrypttab is the example" "" \
	"$(cmp "$TOP/helper/examples/envcrypttab" "$WORK/root/etc/envcrypttab" 2>&1)"

check_eq "envcrypt's conffiles" "/etc/envcrypt/envcrypt.conf
/etc/envcrypttab" "$(dpkg-deb -I "$deb" conffiles 2>/dev/null | sort)"
check_eq "envcrypt-dkms has no conffile" "" "$(dpkg-deb -I "$dkms_deb" conffiles 2>/dev/null)"
# The initramfs is rebuilt when envcrypt is installed or upgraded
# (dh_installinitramfs, for the hook), and the hook runs the packaged helper.
check_eq "envcrypt activates update-initramfs" "activate-noawait update-initramfs" \
	"$(dpkg-deb -I "$deb" triggers 2>/dev/null | grep -v '^#')"
# shellcheck disable=SC2016 # the hook's line, not expanded here
check_eq "the packaged initramfs hook runs /usr/sbin/envcryptctl" \
	'ctl=${ENVCRYPT_INITRAMFS_CTL:-/usr/sbin/envcryptctl}' \
	"$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/initramfs-tools/hooks/envcrypt | grep '^ctl=')"

# Maintainer scripts.
scripts() { # scripts DEB: every maintainer script, concatenated
	local s
	for s in preinst postinst prerm postrm; do dpkg-deb -I "$1" "$s" 2>/dev/null; done
}
scripts "$dkms_deb" >"$WORK/dkms-scripts"
scripts "$deb" >"$WORK/scripts"
# (The patterns are the scripts' own text, $ signs included.)
# shellcheck disable=SC2016
check_eq "envcrypt-dkms: postinst registers and builds through DKMS, prerm removes" "1 1 1" \
	"$(grep -c '/usr/lib/dkms/common.postinst' "$WORK/dkms-scripts") $(grep -c 'dkms install -m "$name"' "$WORK/dkms-scripts") $(grep -c 'dkms remove -m $DKMS_NAME -v $DKMS_VERSION --all' "$WORK/dkms-scripts")"
check_eq "envcrypt: no unit is enabled, started or stopped by the package" "" \
	"$(grep -E 'deb-systemd-invoke|systemctl .*(start|stop|restart|enable)|deb-systemd-helper enable' "$WORK/scripts" |
		grep -v 'was-enabled' | grep -v '^[[:space:]]*deb-systemd-helper enable .*envcrypt-preflight.timer')"
check_eq "no maintainer script touches /etc/envcrypt/ or /var/lib/envcrypt" "" \
	"$(cat "$WORK/scripts" "$WORK/dkms-scripts" | grep -n '/etc/envcrypt\|/var/lib/envcrypt')"

# Install, reinstall (dpkg's upgrade path: prerm upgrade, postinst configure
# with the old version) and purge in a throw-away root with dpkg --root: a
# static busybox is its /bin/sh, stubs stand for dkms (it records its calls
# and what it installed), deb-systemd-helper and ldconfig, and its
# /lib/modules has two kernels with headers and one without.  This runs the
# real maintainer scripts and dpkg's conffile handling; it does not run the
# real DKMS, systemd or udev (the booted-Debian tests do).
R=$WORK/chroot
if [ "$(id -u)" != 0 ] || [ ! -x /bin/busybox ] || ! file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; then
	skip "install, reinstall and purge in a throw-away root" "needs root and busybox-static (make deps)"
else
	mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/lib/dkms,etc,tmp,dev,var/lib/dpkg/info,var/lib/dpkg/updates,var/log}
	mkdir -p "$R"/lib/modules/{6.1.0-9-amd64,6.12.9+bpo-amd64}/{kernel,build} "$R/lib/modules/6.1.0-8-amd64/kernel"
	touch "$R/var/lib/dpkg/status" "$R/var/lib/dpkg/available"
	mknod -m 666 "$R/dev/null" c 1 3
	cp /bin/busybox "$R/bin/busybox"
	chroot "$R" /bin/busybox --install -s /bin
	printf '#!/bin/sh\nexit 0\n' >"$R/sbin/ldconfig"
	printf '#!/bin/sh\necho "deb-systemd-helper $*" >>/var/log/calls\n' >"$R/usr/bin/deb-systemd-helper"
	# dkms: "status" answers from what "install" recorded; everything is logged.
	cat >"$R/usr/sbin/dkms" <<'STUB'
#!/bin/sh
echo "dkms $*" >>/var/log/calls
case $1 in
status) grep -s -- "^$5 -k ${7:-.*}\$" /var/log/dkms.installed | sed 's/^.*$/dm-envcrypt: installed/' ;;
install) echo "$5 -k $7" >>/var/log/dkms.installed ;;
remove) : >/var/log/dkms.installed ;;
esac
exit 0
STUB
	# common.postinst, as DKMS's: add, then build and install for the kernels it picks.
	cat >"$R/usr/lib/dkms/common.postinst" <<'STUB'
#!/bin/sh
echo "common.postinst $*" >>/var/log/calls
dkms add -m "$1" -v "$2"
dkms install -m "$1" -v "$2" -k 6.12.9+bpo-amd64
STUB
	chmod 0755 "$R/sbin/ldconfig" "$R/usr/bin/deb-systemd-helper" "$R/usr/sbin/dkms" "$R/usr/lib/dkms/common.postinst"
	dpkg_root() { dpkg --root="$R" --force-depends --force-confold "$@" >>"$WORK/dpkg.log" 2>&1; }
	installed() { # installed FILE...: which of the files exist in the root
		local f
		for f in "$@"; do [ -e "$R$f" ] && echo "$f"; done
	}
	pkg_files=(/usr/sbin/envcryptctl /lib/udev/rules.d/61-envcrypt.rules
		/lib/systemd/system/envcrypt-attach@.service /etc/envcrypttab /etc/envcrypt/envcrypt.conf
		"$src/dm-envcrypt.c")

	if dpkg_root -i "$deb" "$dkms_deb"; then
		ok "dpkg --root -i both packages"
	else
		not_ok "dpkg --root -i both packages"
		tail -n 20 "$WORK/dpkg.log" | diag
	fi
	check_eq "installed: the package files are in place" "$(printf '%s\n' "${pkg_files[@]}")" \
		"$(installed "${pkg_files[@]}")"
	check_eq "installed: dkms registered the module and built it for both kernels with headers" \
		"dkms add -m dm-envcrypt -v $version
dkms install -m dm-envcrypt -v $version -k 6.1.0-9-amd64
dkms install -m dm-envcrypt -v $version -k 6.12.9+bpo-amd64" "$(grep '^dkms \(add\|install\)' "$R/var/log/calls" | sort)"
	check_eq "installed: the kernel without headers is named" "1" \
		"$(grep -c 'envcrypt-dkms: kernel 6.1.0-8-amd64 has no headers' "$WORK/dpkg.log")"

	echo "data /dev/vdz" >"$R/etc/envcrypttab"
	echo "not a real key" >"$R/etc/envcrypt/root.key"
	: >"$R/var/log/calls"
	if dpkg_root -i "$deb" "$dkms_deb"; then
		ok "dpkg --root -i again (upgrade path)"
	else
		not_ok "dpkg --root -i again (upgrade path)"
		tail -n 20 "$WORK/dpkg.log" | diag
	fi
	check_eq "upgrade: the edited conffile /etc/envcrypttab is kept" "data /dev/vdz" "$(cat "$R/etc/envcrypttab")"
	check_eq "upgrade: the old module is removed from DKMS, the new one registered and built" \
		"dkms remove -m dm-envcrypt -v $version --all
dkms add -m dm-envcrypt -v $version
dkms install -m dm-envcrypt -v $version -k 6.12.9+bpo-amd64
dkms install -m dm-envcrypt -v $version -k 6.1.0-9-amd64" "$(grep '^dkms \(add\|install\|remove\)' "$R/var/log/calls")"

	: >"$R/var/log/calls"
	if dpkg_root --purge envcrypt envcrypt-dkms; then
		ok "dpkg --root --purge both packages"
	else
		not_ok "dpkg --root --purge both packages"
		tail -n 20 "$WORK/dpkg.log" | diag
	fi
	check_eq "purged: no package file and no conffile is left" "" "$(installed "${pkg_files[@]}")"
	check_eq "purged: the module is removed from DKMS" "dkms remove -m dm-envcrypt -v $version --all" \
		"$(grep '^dkms remove' "$R/var/log/calls")"
	check_eq "purged: the local KMS root key is kept" "not a real key" "$(cat "$R/etc/envcrypt/root.key" 2>&1)"
	check_eq "purged: dpkg knows neither package" "" \
		"$(dpkg --root="$R" -l 2>/dev/null | awk '$2 ~ /^envcrypt/ { print $1, $2 }')"
fi

# One version.
changelog=$(dpkg-parsechangelog -l "$TOP/debian/changelog" -SVersion)
check_eq "debian/changelog is at VERSION ($version)" "$version" "$changelog"
check_eq "both packages are at VERSION" "$version $version" \
	"$(dpkg-deb -f "$deb" Version) $(dpkg-deb -f "$dkms_deb" Version)"
check_eq "dkms.conf's PACKAGE_VERSION is VERSION" "PACKAGE_VERSION=\"$version\"" \
	"$(grep '^PACKAGE_VERSION=' "$WORK/dkms-root$src/dkms.conf")"
check_eq "dkms.conf builds for every kernel on upgrades (AUTOINSTALL=yes)" 'AUTOINSTALL="yes"' \
	"$(grep '^AUTOINSTALL=' "$WORK/dkms-root$src/dkms.conf")"
cache=$DEB_DIR/envcrypt-$version/build/helper/CMakeCache.txt
check_eq "the helper's CMake project is at VERSION" "$version" \
	"$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$cache" 2>/dev/null)"
check_eq "envcryptctl --version (the packaged binary) prints VERSION" "envcryptctl $version" \
	"$("$WORK/root/usr/sbin/envcryptctl" --version 2>&1)"
check_eq "kmod/dm-envcrypt.c: MODULE_VERSION is VERSION" "MODULE_VERSION(\"$version\");" \
	"$(grep -o 'MODULE_VERSION([^)]*);' "$TOP/kmod/dm-envcrypt.c")"

echo "test_deb.sh took $((SECONDS - started)) s" | diag
tap_finish
