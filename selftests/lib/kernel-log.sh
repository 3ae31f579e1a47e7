# shellcheck shell=bash
# kernel_trouble LOG: prints (at most 20 of) the lines of a kernel log that
# mean the kernel itself went wrong: BUG:, WARNING:, Oops, Call Trace, a
# panic, "kernel BUG at", a general protection fault, an oops on int3
# (before Linux 6.6 its line has no "Oops: ").  Only lines where the
# message starts with one of these count, so a boot notice such as
# "Spectre V2 : WARNING: ..." is not mistaken for a kernel warning.
# Status 0 if there were any.  Shared by vm-run.sh and run.sh.

KERNEL_TROUBLE='^(\[ *[0-9.]+\] )?[[:space:]]*(BUG:|WARNING:|Oops|Call Trace|Kernel panic|kernel BUG at|general protection fault|int3: )'

kernel_trouble() {
	grep -aE "$KERNEL_TROUBLE" "$1" | head -n 20 | grep .
}
