#!/bin/bash
# The host side of one boot of a selftests/debian/ test: what every test
# does after selftests/debian-run.sh returns.  Sourced after guest.sh (it
# uses tap_ok, tap_fail, expect_eq and the TAP counters there).
#
#   debian_boot_relay N DIR     the guest's TAP lines (DIR.tap) as this
#                               test's own checks, each named "boot N: ...",
#                               its comments kept, its plan dropped; then
#                               debian-run.sh's own stderr (DIR.err) as
#                               comments
#   debian_boot_multi_user N DIR [DETAIL]
#                               one check: the guest recorded when it
#                               reached multi-user.target (DIR/share/
#                               multi-user-usec), shown in seconds after
#                               the kernel started, with DETAIL after it
#   debian_boot_finished N PHASE STATUS
#                               one check: the guest side exited 0
#   debian_boot_died N DIR      one check, for a boot meant to die:
#                               debian-run kept a copy of its console
#                               (removed then)
#   debian_boot_host ARG...     the host side's start: ARG... must be
#                               "--kernel KVER" (else the usage on stderr,
#                               exit 2); sets KVER, TOP (the repository)
#                               and RUN_TIMEOUT (DEBIAN_RUN_TIMEOUT, default
#                               900 s, each boot's --timeout)
#   debian_boot_image           IMAGE: scripts/debian-image.sh's image for
#                               KVER (built when missing), or bail out
#   debian_boot_work NAME       WORK: a new build/debian-run/NAME-KVER.XXXXXX
#                               (under build/: the guest sees the
#                               repository, read-only, at the same path),
#                               or bail out
#   debian_guest_pki DIR CN     a throwaway CA in DIR, a server certificate
#                               (CN) for 10.0.2.2 (the host's loopback as
#                               the guest dials it) and 127.0.0.1, and the
#                               client certificate client-a; one check, or
#                               bail out (needs tests/host/lib/kmip/pykmip.sh)
#
# DIR is the --out directory given to debian-run.sh; its TAP and stderr
# sit next to it as DIR.tap and DIR.err.
#
# In the guest (the tests source this file there too):
#   unit_journal -b|-b-1 UNIT   the journal lines PID 1 or the unit wrote
#                               about UNIT in that boot, "[monotonic] ..."
#   first_usec LINES REGEX      the monotonic time, in µs, of the first of
#                               LINES matching REGEX

debian_boot_host() {
	if [ "${1-}" != --kernel ] || [ -z "${2-}" ]; then
		echo "usage: $0 --kernel KVER" >&2
		exit 2
	fi
	KVER=$2
	TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	# shellcheck disable=SC2034 # for the test that sources this
	RUN_TIMEOUT=${DEBIAN_RUN_TIMEOUT:-900}
}

debian_boot_image() {
	# shellcheck disable=SC2034 # for the test that sources this
	IMAGE=$("$TOP/scripts/debian-image.sh" --quiet "$KVER") ||
		tap_bail "image for $KVER" "scripts/debian-image.sh $KVER succeeds" "it failed (messages above)"
}

debian_boot_work() { # debian_boot_work NAME
	mkdir -p "$TOP/build/debian-run"
	# shellcheck disable=SC2034 # for the test that sources this
	WORK=$(mktemp -d "$TOP/build/debian-run/$1-$KVER.XXXXXX") ||
		tap_bail "work directory" "created" "mktemp failed"
}

debian_boot_relay() { # debian_boot_relay N DIR
	local n=$1 dir=$2 line
	while IFS= read -r line; do
		case $line in
		"ok "*) tap_ok "boot $n: ${line#ok * - }" ;;
		"not ok "*)
			# The guest already printed its evidence as comments; the
			# failure is counted here without a second diagnostic.
			TAP_CHECKS=$((TAP_CHECKS + 1))
			TAP_FAILED=$((TAP_FAILED + 1))
			echo "not ok $TAP_CHECKS - boot $n: ${line#not ok * - }"
			tap_record_failure "boot $n: ${line#not ok * - }" "(evidence in the guest's lines above)"
			;;
		1..*) ;;
		*) echo "# ${line#\# }" ;;
		esac
	done <"$dir.tap"
	sed 's/^/# /' "$dir.err"
}

debian_boot_multi_user() { # debian_boot_multi_user N DIR [DETAIL]
	local n=$1 dir=$2 detail=${3:-} usec seconds
	usec=$(cat "$dir/share/multi-user-usec" 2>/dev/null)
	if [[ $usec =~ ^[1-9][0-9]*$ ]]; then
		seconds=$(awk -v u="$usec" 'BEGIN { printf "%.1f", u / 1e6 }')
		tap_ok "boot $n: multi-user.target reached ($seconds s after the kernel started${detail:+; $detail})"
	else
		tap_fail "boot $n: multi-user.target reached" "a time" "none; $(debian_boot_why "$dir")"
	fi
}

# debian_boot_why DIR: one line on why a boot did not get far: debian-run's
# verdict and the console's last envcrypt or kernel message.
debian_boot_why() {
	local dir=$1 verdict last
	verdict=$(grep -a '^debian-run: kernel ' "$dir.err" 2>/dev/null | tail -n 1)
	# An emergency or rescue shell's report (debian-run.sh keeps it in
	# emergency.txt), else a kernel panic's cause, else the console's last
	# line of note.
	last=$(sed '1d;$d' "$dir/emergency.txt" 2>/dev/null | paste -s -d '|' | sed 's/|/ | /g')
	[ -n "$last" ] || last=$(debian_console_panic "$dir/console.txt")
	[ -n "$last" ] || last=$(grep -a -E 'envcrypt|BUG|panic|stall|lockup|Timed out|FAILED|Kernel' "$dir/console.txt" 2>/dev/null |
		debian_console_clean | tail -n 1)
	echo "${verdict:-debian-run said nothing}; console: ${last:-nothing of note} (log: $dir/console.txt)"
}

# The console's lines without carriage returns and terminal escapes.
debian_console_clean() {
	tr -d '\r' | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g'
}

# debian_console_panic LOG: a kernel panic's line ("Kernel panic - not
# syncing: ...") and the first oops line before it that names the fault
# and where (BUG:, kernel BUG at, general protection fault, RIP:), as one
# line; nothing when the kernel did not panic.  The panic's last line
# ("Kernel Offset: ...", "end Kernel panic") says nothing of the cause.
debian_console_panic() {
	debian_console_clean <"$1" 2>/dev/null | awk '
		/Kernel panic - not syncing/ { panic = $0; exit }
		fault == "" && /(BUG:|kernel BUG at|general protection fault|Oops:|int3: 0000)/ { fault = $0 }
		rip == "" && /RIP: [0-9]+:[^ ]/ { rip = $0 }
		END {
			if (panic == "") exit
			line = panic
			if (fault != "") line = line " | " fault
			if (rip != "") line = line " | " rip
			gsub(/\[ *[0-9]+\.[0-9]+\] /, "", line)
			print line
		}'
}

# debian_boot_died N DIR: one check, for a boot meant to die (a panic in
# the initramfs): debian-run said the guest died and kept a copy of its
# console outside the clone (selftests/debian-run.sh); this death was
# expected, so the copy goes.
debian_boot_died() {
	local n=$1 dir=$2 kept
	kept=$(sed -n 's/.*, kept in \(.*\))$/\1/p' "$dir.err" 2>/dev/null | tail -n 1)
	if [ -n "$kept" ] && cmp -s "$kept" "$dir/console.txt"; then
		tap_ok "boot $n: debian-run said the guest died and kept its console ($kept, removed: expected)"
		rm -f "$kept"
	else
		tap_fail "boot $n: debian-run said the guest died and kept its console" \
			"', kept in PATH)', PATH a copy of console.txt" "$(grep -a 'debian-run: kernel' "$dir.err" | tail -n 1)"
	fi
}

debian_boot_finished() { # debian_boot_finished N PHASE STATUS
	expect_eq "boot $1: the guest side finished ($2)" 0 "$3"
}

debian_guest_pki() { # debian_guest_pki DIR CN
	mkdir -p "$1"
	if kmip_ca "$1" ca && kmip_cert "$1" server ca "/CN=$2" \
		"subjectAltName=IP:10.0.2.2,IP:127.0.0.1
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature" &&
		kmip_cert "$1" client-a ca "/CN=envcrypt-guest" \
			"extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"; then
		tap_ok "throwaway CA, server certificate for 10.0.2.2, client certificate"
	else
		tap_bail "certificates" "made with openssl" "openssl failed"
	fi
}

# debian_monitor SOCKET COMMAND: one command to the QEMU human monitor of a
# guest started with debian-run.sh --monitor SOCKET; prints the command
# and the monitor's answer on one line.  Exit 1 when the socket cannot be
# reached, does not answer within 20 s, or the answer is an error ("Error:
# ...", "Could not ...").
debian_monitor() {
	python3 - "$1" "$2" <<'PYEOF'
import re
import socket
import sys

sock = socket.socket(socket.AF_UNIX)
sock.settimeout(20)
try:
    sock.connect(sys.argv[1])

    def until_prompt():
        seen = b""
        while not seen.rstrip().endswith(b"(qemu)"):
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError("monitor closed the connection")
            seen += chunk
        return seen

    until_prompt()
    sock.sendall(sys.argv[2].encode() + b"\n")
    answer = until_prompt().decode(errors="replace")
except OSError as err:
    print(f"monitor {sys.argv[1]}: {sys.argv[2]}: {err}")
    sys.exit(1)
answer = re.sub(r"\x1b\[[0-9;]*[A-Za-z]|\r", "", answer)
# The monitor's line editor echoes the command as it redraws it: the
# echo is the line that ends with the whole command.
lines = [
    l.strip() for l in answer.split("\n")
    if l.strip() and not l.strip().startswith("(qemu)") and not l.strip().endswith(sys.argv[2])
]
print(f"{sys.argv[2]}: {' / '.join(lines) if lines else '(no answer)'}")
if any(re.match(r"(error|could not)", l, re.IGNORECASE) for l in lines):
    sys.exit(1)
PYEOF
}

unit_journal() { # unit_journal -b|-b-1 UNIT
	journalctl "$1" --no-pager -o short-monotonic "UNIT=$2" + "_SYSTEMD_UNIT=$2" 2>&1
}

first_usec() { # first_usec LINES REGEX
	awk -v re="$2" '$0 ~ re {
		t = $0; sub(/^\[ */, "", t); sub(/\].*/, "", t)
		split(t, p, "."); printf "%d%06d\n", p[1], p[2]; exit }' <<<"$1"
}
