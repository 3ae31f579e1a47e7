#!/bin/bash
# The suite's guest runs with slub_debug=FZPU (selftests/run.sh), so that a
# double free or a write past a slab object is reported by the kernel (and
# fails the run through the kernel-log check) instead of passing unnoticed.
# Checks the kernel command line and, in /sys/kernel/slab, that the caches
# the target's allocations come from (kmalloc, the bio and dm per-bio data
# caches) have sanity checks, red zones, poisoning and owner tracking on.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

expect_match "kernel command line has slub_debug=FZPU" '(^| )slub_debug=FZPU( |$)' "$(cat /proc/cmdline)"

[ -d /sys/kernel/slab/kmalloc-64 ] ||
	tap_bail "SLUB sysfs present" "/sys/kernel/slab/kmalloc-64" "$(ls /sys/kernel/slab 2>&1 | head -n 5)"
for cache in kmalloc-64 kmalloc-1k kmalloc-4k; do
	for flag in sanity_checks red_zone poison store_user; do
		expect_eq "$cache: $flag" 1 "$(cat "/sys/kernel/slab/$cache/$flag" 2>&1)"
	done
done
tap_done
