#!/bin/sh
# make install's DKMS step: registers dm-envcrypt/VERSION, whose source make
# install has put in /usr/src/dm-envcrypt-VERSION/, and builds and installs
# it for every installed kernel that has headers (/lib/modules/<kver>/build).
# A kernel without headers (the running one included) only gets a warning:
# DKMS builds the module for it when its headers are installed (dkms's
# header_postinst.d hook), as it does for every kernel installed later.
#
# Usage: dkms-install.sh NAME VERSION
# MODULES_DIR (default /lib/modules) and RUNNING_KERNEL (default uname -r)
# exist for tests/host/test_install.sh, which runs this with a stub dkms.
# Exit status: 0 when every kernel with headers has the module, 1 when
# dkms failed for one of them (the others are still done).
set -u
name=$1
version=$2
modules=${MODULES_DIR:-/lib/modules}
running=${RUNNING_KERNEL:-$(uname -r)}

# A re-install of the same version replaces the source: drop what DKMS
# built from the old one, then register the new one.
if [ -n "$(dkms status -m "$name" -v "$version" 2>/dev/null)" ]; then
	dkms remove "$name/$version" --all >/dev/null || true
fi
if ! dkms add "$name/$version"; then
	echo "make install: dkms add $name/$version failed" >&2
	exit 1
fi

# The installed kernels: a module tree (kernel/) or an image in /boot, and
# the running kernel even when neither is there.
kernels=$(
	for d in "$modules"/*/; do
		k=$(basename "$d")
		if [ -d "$d/kernel" ] || [ -e "/boot/vmlinuz-$k" ]; then
			echo "$k"
		fi
	done
	echo "$running"
)
failed=""
built=""
for k in $(echo "$kernels" | sort -uV); do
	if [ ! -d "$modules/$k/build" ]; then
		echo "make install: warning: kernel $k has no headers ($modules/$k/build):" \
			"$name is not built for it; install linux-headers-$k and DKMS builds it" >&2
		continue
	fi
	if dkms install "$name/$version" -k "$k"; then
		built="$built $k"
	else
		failed="$failed $k"
	fi
done
if [ -n "$failed" ]; then
	echo "make install: dkms could not build or install $name/$version for:$failed" \
		"(see /var/lib/dkms/$name/$version/build/make.log)" >&2
	exit 1
fi
if [ -z "$built" ]; then
	echo "make install: warning: no installed kernel has headers; $name/$version is" \
		"registered with DKMS and is built when headers are installed" >&2
fi
exit 0
