#!/bin/bash
# The target through an asynchronous cipher driver with the shape of a
# hardware accelerator: kmod-test/envcrypt_async_xts.ko (test-only, built
# by "make kmod-matrix" into build/kmod-test/<kver>/) registers "xts(aes)"
# above every real implementation, wraps a synchronous one, and answers
# requests in turn synchronously, from a hard-interrupt timer, from a work
# item with bottom halves off, or backlogged (-EBUSY).
#
# 1. Loaded with allocates_memory=1 (CRYPTO_ALG_ALLOCATES_MEMORY), the
#    driver is never chosen: the status names a real AES-NI/VAES driver.
# 2. Loaded plainly, the status names it, and the known-answer (its
#    ciphertext checked here against python3-cryptography), dm-crypt interop
#    and fio verify tests all pass through it.  The driver's counters show
#    every kind of completion happened, and that the target never started a
#    request from inside a completion callback or from a hard interrupt:
#    the rest of an I/O after an asynchronous completion runs on the
#    target's workers.  The kernel logs nothing ("scheduling while atomic"
#    is what a continuation that sleeps there would give).

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

SUITE=$ENVCRYPT_TOP/selftests/envcrypt
MODULE=$ENVCRYPT_TOP/build/kmod-test/$ENVCRYPT_KVER/envcrypt_async_xts.ko
DRIVER=xts-aes-envcrypt-async-test
STATS=/sys/module/envcrypt_async_xts/parameters/stats
KEY_DESC=envcrypt:async
NAME=async

guest_setup
[ -f "$MODULE" ] || tap_bail "test driver built" "$MODULE (make kmod-matrix)" "missing"
dev=$(brd_device 16) || tap_bail "brd device" "/dev/ram0 of 16 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
head -c 64 /dev/urandom >/tmp/async.key
add_logon_key "$KEY_DESC" /tmp/async.key >/dev/null ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"

unload_driver() {
	local tries
	grep -q '^envcrypt_async_xts ' /proc/modules || return 0
	for ((tries = 0; tries < 50; tries++)); do
		rmmod envcrypt_async_xts 2>/dev/null && return 0
		sleep 0.2
	done
	rmmod envcrypt_async_xts
}
on_exit unload_driver

driver_of() { # driver_of MAPPING: the first word of its status
	dmsetup status "$1" | awk '{ print $4 }'
}

# ---- 1. a memory-allocating driver is never chosen ------------------------
insmod "$MODULE" allocates_memory=1 ||
	tap_bail "test driver loads (allocates_memory=1)" "insmod succeeds" "$(dmesg | tail -n 3)"
expect_match "/proc/crypto lists the test driver" "driver +: $DRIVER" "$(cat /proc/crypto)"
dm_create "$NAME" "$(envcrypt_table 32768 "$dev" 0 "$KEY_DESC" 4096)" ||
	tap_bail "mapping created" "table loads" "$DM_ERROR"
expect_match "a memory-allocating xts(aes) is not chosen" "^xts-aes-(aesni|vaes)" "$(driver_of "$NAME")"
dm_remove "$NAME"
expect_succeeds "test driver unloads" unload_driver

# ---- 2. everything through the asynchronous driver -------------------------
insmod "$MODULE" || tap_bail "test driver loads" "insmod succeeds" "$(dmesg | tail -n 3)"
dm_create "$NAME" "$(envcrypt_table 32768 "$dev" 0 "$KEY_DESC" 4096)" ||
	tap_bail "mapping created" "table loads" "$DM_ERROR"
expect_eq "status names the driver serving I/O" "$DRIVER" "$(driver_of "$NAME")"
dm_remove "$NAME"

dmesg_mark
# The known-answer test leaves its parameters here, not where the host
# check after the suite looks (the plain run of the test fills that).
export ENVCRYPT_OUT=/tmp/async-out
mkdir -p "$ENVCRYPT_OUT"
for test in test_known_answer.sh test_dmcrypt_interop.sh test_fio_verify.sh; do
	start=$SECONDS
	output=$(cd "$SUITE" && bash "$test" 2>&1)
	status=$?
	echo "$output" | sed 's/^/  /'
	if [ "$status" = 0 ]; then
		tap_ok "$test through $DRIVER ($((SECONDS - start)) s)"
	else
		tap_fail "$test through $DRIVER" "exit status 0" "exit status $status"
	fi
done

# The ciphertext the known-answer test wrote through the driver (the
# target's regions; the dm-crypt one is the host check's control).
blockdev --flushbufs /dev/vda
for region in envcrypt-512 envcrypt-4096; do
	params=$ENVCRYPT_OUT/known_answer/$region.params
	if evidence=$(/usr/bin/python3 "$ENVCRYPT_TOP/selftests/lib/xts_known_answer.py" "$params" /dev/vda 2>&1); then
		tap_ok "known answer $region through $DRIVER: $evidence"
	else
		tap_fail "known answer $region through $DRIVER" "the expected ciphertext" "$evidence"
	fi
done

stats=$(cat "$STATS")
echo "# driver: $stats"
for kind in sync hardirq bh backlog; do
	count=$(sed -n "s/.*\\b$kind=\\([0-9]*\\).*/\\1/p" <<<"$stats")
	if [ "${count:-0}" -gt 0 ]; then
		tap_ok "requests answered $kind: $count"
	else
		tap_fail "requests answered $kind" "a count > 0" "$stats"
	fi
done
expect_match "no request started inside a completion callback" "\\bnested=0\\b" "$stats"
expect_match "no request started in hard interrupt context" "\\bin_hardirq=0\\b" "$stats"
expect_eq "kernel log clean" "" \
	"$(dmesg_since_mark | grep -E 'scheduling while atomic|sleeping function|BUG|WARNING|Call Trace|I/O error')"
expect_succeeds "test driver unloads" unload_driver
tap_done
