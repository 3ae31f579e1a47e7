#!/bin/sh
# Prints the kernel matrix: the newest installed 6.1 and 6.12 kernels that
# have both an image and a build tree.
for series in 6.1 6.12; do
	for dir in $(ls -1d /lib/modules/"$series".*/build 2>/dev/null | sort -Vr); do
		kver=$(echo "$dir" | cut -d/ -f4)
		if [ -e "/boot/vmlinuz-$kver" ]; then
			echo "$kver"
			break
		fi
	done
done
