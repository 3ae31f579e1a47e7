#!/bin/bash
# make install / uninstall into a DESTDIR, and DKMS, as TAP 13:
#  - install with PREFIX=/usr stages exactly the expected files (helper, man
#    page, udev rules, systemd units and generator, docs, examples, default
#    /etc files, module source), with modes, and @SBINDIR@/@UNITDIR@ replaced;
#  - a second install keeps an edited /etc/envcrypttab;
#  - the staged generator's units match what envcryptctl generate-units makes;
#  - uninstall removes everything but the administrator's /etc files;
#  - "dkms add" + "dkms build" of the staged module source for each kernel of
#    the matrix, in a private DKMS tree (the host's /lib/modules is not
#    touched; "dkms install" is not run because these build machines' kernel
#    has no module support), gives a dm-envcrypt.ko whose vermagic names that
#    kernel.  dkms signs what it builds: on its first build on a host it
#    creates its signing key /var/lib/dkms/mok.{key,pub}, as any DKMS
#    install would (its signing settings come only from /etc/dkms).
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/envcrypt-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/stage
KERNELS=$("$TOP/scripts/kernels.sh")
n=0
failed=0

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { # not_ok WHAT EXPECTED SEEN
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $1"
	echo "#   expected: $2"
	echo "#   seen:     ${3//$'\n'/$'\n'#             }"
}
check_eq() { if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1" "$2" "$3"; fi; }

echo "TAP version 13"
echo "1..$((11 + $(echo "$KERNELS" | wc -w)))"

if out=$(make -C "$TOP" install DESTDIR="$STAGE" PREFIX=/usr 2>&1); then
	ok "make install DESTDIR=... PREFIX=/usr"
else
	not_ok "make install DESTDIR=... PREFIX=/usr" "exit 0" "$(tail -n 20 <<<"$out")"
fi

version=$(cat "$TOP/VERSION")
expected=$(
	cat <<EOF
0644 /etc/envcrypt/envcrypt.conf
0644 /etc/envcrypttab
0644 /lib/systemd/system/envcrypt-attach@.service
0644 /lib/systemd/system/envcrypt-preflight.service
0644 /lib/systemd/system/envcrypt-preflight.timer
0644 /lib/systemd/system/envcrypt-remote.target
0644 /lib/systemd/system/envcrypt.target
0755 /lib/systemd/system-generators/envcrypt-generator
0644 /lib/udev/rules.d/61-envcrypt.rules
0755 /usr/sbin/envcryptctl
0755 /usr/share/initramfs-tools/hooks/envcrypt
0755 /usr/share/initramfs-tools/scripts/local-top/envcrypt
0644 /usr/share/man/man5/envcrypt.conf.5
0644 /usr/share/man/man5/envcrypttab.5
0644 /usr/share/man/man8/envcryptctl.8
0644 /usr/share/doc/envcrypt/examples/envcrypt.conf
0644 /usr/share/doc/envcrypt/examples/envcrypttab
0644 /usr/src/dm-envcrypt-$version/Kbuild
0644 /usr/src/dm-envcrypt-$version/Makefile
0644 /usr/src/dm-envcrypt-$version/compat.h
0644 /usr/src/dm-envcrypt-$version/dkms.conf
0644 /usr/src/dm-envcrypt-$version/dm-envcrypt.c
EOF
	for doc in "$TOP"/Documentation/admin-guide/*.rst; do
		echo "0644 /usr/share/doc/envcrypt/$(basename "$doc")"
	done
)
listing() {
	(cd "$STAGE" && find . -type f -printf '%m %p\n' 2>/dev/null) | sed 's| \./| /|; s|^\([0-7]\{3\}\) |0\1 |' | sort -k2
}
check_eq "the staged file list and modes" "$(sort -k2 <<<"$expected")" "$(listing)"

check_eq "the staged dkms.conf has the version of VERSION" "PACKAGE_VERSION=\"$version\"" \
	"$(grep '^PACKAGE_VERSION=' "$STAGE/usr/src/dm-envcrypt-$version/dkms.conf" 2>/dev/null)"

left=$(grep -l '@SBINDIR@\|@UNITDIR@' -r "$STAGE" 2>/dev/null)
check_eq "no @SBINDIR@ or @UNITDIR@ left" "" "$left"
rules=$STAGE/lib/udev/rules.d/61-envcrypt.rules
check_eq "the rules run /usr/sbin/envcryptctl" "3" \
	"$(grep -c '/usr/sbin/envcryptctl \(probe\|tab-match\|attach-all\)' "$rules" 2>/dev/null)"

echo "edited /dev/vdz" >"$STAGE/etc/envcrypttab"
make -C "$TOP" install DESTDIR="$STAGE" PREFIX=/usr >/dev/null 2>&1
check_eq "a second install keeps an edited /etc/envcrypttab" "edited /dev/vdz" \
	"$(cat "$STAGE/etc/envcrypttab")"

# The staged generator, pointed at the build's envcryptctl and an example table.
printf 'data /dev/vdb\nnet UUID=4f0c6d8e-0d1a-4c55-9d0e-2b8f1a6c3e11 netdev,nofail\n' >"$WORK/tab"
sed "s|/usr/sbin/envcryptctl|$TOP/build/envcryptctl|" \
	"$STAGE/lib/systemd/system-generators/envcrypt-generator" >"$WORK/generator"
mkdir -p "$WORK/gen"
if ENVCRYPT_TAB=$WORK/tab sh "$WORK/generator" "$WORK/gen" "$WORK/gen.early" "$WORK/gen.late" 2>"$WORK/gen.err"; then
	got=$(cd "$WORK/gen" && find . \( -type f -o -type l \) -printf '%p %l\n' | sort)
	check_eq "the generator writes one instance per line, bound, ordered and wanted" \
		"./dev-mapper-data.device.d/50-envcrypt-mapping-timeout.conf 
./dev-mapper-data.device.requires/envcrypt-attach@data.service /lib/systemd/system/envcrypt-attach@.service
./dev-mapper-net.device.d/50-envcrypt-mapping-timeout.conf 
./dev-mapper-net.device.requires/envcrypt-attach@net.service /lib/systemd/system/envcrypt-attach@.service
./envcrypt-attach@data.service.d/50-envcrypttab.conf 
./envcrypt-attach@net.service.d/50-envcrypttab.conf 
./envcrypt-remote.target.wants/envcrypt-attach@net.service /lib/systemd/system/envcrypt-attach@.service
./envcrypt.target.requires/envcrypt-attach@data.service /lib/systemd/system/envcrypt-attach@.service
./remote-fs.target.wants/envcrypt-remote.target /lib/systemd/system/envcrypt-remote.target
./sysinit.target.wants/envcrypt.target /lib/systemd/system/envcrypt.target" "$got"
else
	not_ok "the generator writes one instance per line, bound, ordered and wanted" "exit 0" \
		"$(cat "$WORK/gen.err")"
fi

# systemd's own checker on the staged units (the template's ExecStart must
# exist, so point it at the build's binary).
mkdir -p "$WORK/units"
for unit in envcrypt-attach@.service envcrypt.target envcrypt-remote.target \
	envcrypt-preflight.service envcrypt-preflight.timer; do
	sed "s|/usr/sbin/envcryptctl|$TOP/build/envcryptctl|" "$STAGE/lib/systemd/system/$unit" >"$WORK/units/$unit"
done
# The generator's drop-ins ($WORK/gen) are verified with the instances.
if out=$(SYSTEMD_UNIT_PATH="$WORK/gen:$WORK/units:" systemd-analyze verify --man=no \
	"$WORK/units/envcrypt-attach@data.service" "$WORK/units/envcrypt-attach@net.service" \
	"$WORK/units/envcrypt.target" \
	"$WORK/units/envcrypt-remote.target" "$WORK/units/envcrypt-preflight.service" \
	"$WORK/units/envcrypt-preflight.timer" 2>&1) && [ -z "$out" ]; then
	ok "systemd-analyze verify accepts the units"
else
	not_ok "systemd-analyze verify accepts the units" "no complaint" "$out"
fi

make -C "$TOP" uninstall DESTDIR="$STAGE" PREFIX=/usr >/dev/null 2>&1
check_eq "uninstall leaves only the administrator's /etc files" \
	"0644 /etc/envcrypt/envcrypt.conf
0644 /etc/envcrypttab" "$(listing)"

# make install's DKMS step (scripts/dkms-install.sh) against a stub dkms
# that records its calls, and a module tree of three kernels: two with
# headers, one without, plus a running kernel that has no module tree.
mkdir -p "$WORK/bin" "$WORK/modules/6.1.0-9-amd64/kernel" "$WORK/modules/6.1.0-9-amd64/build" \
	"$WORK/modules/6.12.9+bpo-amd64/kernel" "$WORK/modules/6.12.9+bpo-amd64/build" \
	"$WORK/modules/6.1.0-8-amd64/kernel"
printf '#!/bin/sh\necho "$*" >>"%s"\n' "$WORK/dkms.calls" >"$WORK/bin/dkms"
chmod +x "$WORK/bin/dkms"
out=$(PATH="$WORK/bin:$PATH" MODULES_DIR="$WORK/modules" RUNNING_KERNEL=6.18.1-cloud \
	"$TOP/scripts/dkms-install.sh" dm-envcrypt "$version" 2>&1)
rc=$?
check_eq "dkms-install.sh registers once and installs for every kernel with headers" \
	"0 status -m dm-envcrypt -v $version
add dm-envcrypt/$version
install dm-envcrypt/$version -k 6.1.0-9-amd64
install dm-envcrypt/$version -k 6.12.9+bpo-amd64" "$rc $(cat "$WORK/dkms.calls" 2>/dev/null)"
check_eq "dkms-install.sh warns for each kernel without headers, the running one included" \
	"make install: warning: kernel 6.1.0-8-amd64 has no headers
make install: warning: kernel 6.18.1-cloud has no headers" "$(grep -o '^make install: warning: kernel [^ ]* has no headers' <<<"$out")"

# DKMS, in a private tree, from the source install staged.
make -C "$TOP" install DESTDIR="$STAGE" PREFIX=/usr >/dev/null 2>&1
DKMS_TREE=$WORK/dkms
mkdir -p "$DKMS_TREE"
dkms_args=(-m dm-envcrypt -v "$version" --dkmstree "$DKMS_TREE" --sourcetree "$STAGE/usr/src")
if ! command -v dkms >/dev/null; then
	for k in $KERNELS; do
		n=$((n + 1))
		echo "ok $n - dkms build for $k # SKIP dkms is not installed (make deps)"
	done
elif out=$(dkms add "${dkms_args[@]}" 2>&1); then
	for k in $KERNELS; do
		if out=$(dkms build "${dkms_args[@]}" -k "$k" 2>&1); then
			ko=$(find "$DKMS_TREE/dm-envcrypt/$version/$k" -name 'dm-envcrypt.ko*' | head -n1)
			magic=$(modinfo -F vermagic "$ko" 2>/dev/null | cut -d' ' -f1)
			check_eq "dkms build for $k gives a module for that kernel" "$k" "$magic"
		else
			not_ok "dkms build for $k" "exit 0" "$(tail -n 20 <<<"$out"; tail -n 20 "$DKMS_TREE/dm-envcrypt/$version/build/make.log" 2>/dev/null)"
		fi
	done
else
	for k in $KERNELS; do
		not_ok "dkms build for $k" "dkms add to succeed" "$out"
	done
fi
[ "$failed" = 0 ]
