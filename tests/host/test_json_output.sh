#!/bin/bash
# Every --json document of envcryptctl against its schema, the table of
# Documentation/admin-guide/json-output.rst (scripts/json-schema.py), as
# TAP 13.  Runs here every command that needs no kernel module,
# device-mapper or TPM, against a local KMS and image files in a temporary
# directory; the guest test selftests/envcrypt/test_json_output.sh runs the
# others.  Then checks the coverage both ways: every command envcryptctl
# offers is in the table (or prints KEY=value by design), and every row of
# the table is run here or in the guest.
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/host/lib/tap.sh
. "$TOP/tests/host/lib/tap.sh"
DOC=$TOP/Documentation/admin-guide/json-output.rst
ENVCTL=$TOP/build/envcryptctl
# The rows the guest test checks (attach, a mapping, a TPM).
GUEST_ROWS=("attach" "detach" "status" "kms seal-root-key" "kms unseal-root-key")
# Commands that print KEY=value lines or unit files, whatever --json says.
NOT_JSON=("probe" "tab-match" "initramfs-plan" "generate-units")

echo "TAP version 13"
[ -x "$ENVCTL" ] || bail "build/envcryptctl exists (make helper-bin)"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
printf '[kms.local]\ndir = "%s/kms"\nroot_key = "%s/root.key"\n' "$WORK" "$WORK" >"$WORK/conf"
printf '[kms.local]\ndir = "%s/kms2"\nroot_key = "%s/root2.key"\n' "$WORK" "$WORK" >"$WORK/conf2"
chmod 600 "$WORK/conf" "$WORK/conf2"
export ENVCRYPT_TAB=$WORK/tab
: >"$ENVCRYPT_TAB"
cd "$WORK" || bail "cd $WORK"

checked=()

# check ROW WANTED_STATUS ARGS...: runs envcryptctl --config $CONF --json
# ARGS, expects WANTED_STATUS ("any" for a command whose status depends on
# this host, such as preflight without the module) and a document that
# fits ROW.
CONF=$WORK/conf
check() {
	local row=$1 wanted=$2 status problems
	shift 2
	"$ENVCTL" --config "$CONF" --json "$@" >"$WORK/out" 2>"$WORK/err"
	status=$?
	checked+=("$row")
	if [ "$wanted" != any ] && [ "$status" != "$wanted" ]; then
		not_ok "$row: envcryptctl $* exits $wanted"
		{
			echo "exit $status"
			head -c 2000 "$WORK/err"
		} | diag
		return
	fi
	if problems=$("$TOP/scripts/json-schema.py" "$DOC" "$row" <"$WORK/out" 2>&1); then
		ok "$row: the document of envcryptctl --json $* fits the table"
	else
		not_ok "$row: the document of envcryptctl --json $* fits the table"
		{
			echo "$problems"
			head -c 2000 "$WORK/out"
		} | diag
	fi
}

truncate -s 64M img
truncate -s 32M src
if ! openssl genpkey -algorithm X25519 -out rec.key 2>/dev/null ||
	! openssl pkey -in rec.key -pubout -out rec.pub 2>/dev/null; then
	bail "openssl makes an X25519 pair"
fi

check "format" 0 format img
check "inspect" 0 inspect img
check "verify" 0 verify img
check "rewrap" 0 rewrap img
check "upgrade-header" 0 upgrade-header img
check "recovery add" 0 recovery add img --recovery-key rec.pub
check "recovery show" 0 recovery show img
check "recover" 0 recover img --recovery-private-key rec.key
check "recovery remove" 0 recovery remove img
check "header-backup" 0 header-backup img hb
check "header-restore" 0 header-restore img hb
check "image encrypt" 0 image encrypt src dst
check "attach-all" 0 attach-all
check "detach-all" 0 detach-all
echo "img $WORK/img" >"$ENVCRYPT_TAB"
check "rewrap --all" 0 rewrap --all
check "status --keys" 0 status --keys
check "preflight" any preflight

check "kms create-key" 0 kms create-key --alias one --description "a key"
check "kms describe-key" 0 kms describe-key alias/one
check "kms list-keys" 0 kms list-keys
check "kms disable-key" 0 kms disable-key alias/one
check "kms enable-key" 0 kms enable-key alias/one
check "kms rotate-key" 0 kms rotate-key alias/one
check "kms rotate-due" 0 kms rotate-due
check "kms schedule-key-deletion" 0 kms schedule-key-deletion alias/one --pending-window-days 7
check "kms cancel-key-deletion" 0 kms cancel-key-deletion alias/one
check "kms purge-due" 0 kms purge-due
check "kms create-alias" 0 kms create-alias alias/two alias/one
check "kms list-aliases" 0 kms list-aliases
check "kms delete-alias" 0 kms delete-alias alias/two
check "kms create-grant" 0 kms create-grant alias/one user/bob decrypt describe
check "kms list-grants" 0 kms list-grants alias/one
grant=$(python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["grant_id"])' <"$WORK/out")
check "kms revoke-grant" 0 kms revoke-grant alias/one "$grant"
"$ENVCTL" --config "$WORK/conf" kms create-key --alias byok --origin EXTERNAL >/dev/null
check "kms get-parameters-for-import" 0 kms get-parameters-for-import alias/byok \
	--public-key wrap.pem --token token
head -c 32 /dev/urandom >material
openssl pkeyutl -encrypt -pubin -inkey wrap.pem -pkeyopt rsa_padding_mode:oaep \
	-pkeyopt rsa_oaep_md:sha256 -in material -out material.enc ||
	bail "openssl wraps the material"
# With --expires, so that the key record's optional material_expires_at is checked too.
check "kms import-key-material" 0 kms import-key-material alias/byok --material material.enc \
	--token token --expires "$(date -u -d '+30 days' +%Y-%m-%dT%H:%M:%SZ)"
check "kms delete-key-material" 0 kms delete-key-material alias/byok
check "kms audit" 0 kms audit
check "kms audit --verify" 0 kms audit --verify
check "kms audit --anchor" 0 kms audit --anchor
check "kms backup" 0 kms backup --to backup --recovery-key rec.pub
# Into a fresh region of its own, as on a new host.
CONF=$WORK/conf2 check "kms restore" 0 kms restore backup --recovery-private-key rec.key

# Every row of the table, here or in the guest.
mapfile -t rows < <(python3 - "$TOP/scripts/json-schema.py" "$DOC" <<'EOF'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("schema", sys.argv[1])
schema = importlib.util.module_from_spec(spec)
spec.loader.exec_module(schema)
commands, _ = schema.read_doc(sys.argv[2])
print("\n".join(commands))
EOF
)
unchecked=()
for row in "${rows[@]}"; do
	printf '%s\n' "${checked[@]}" "${GUEST_ROWS[@]}" | grep -qxF "$row" || unchecked+=("$row")
done
if [ "${#rows[@]}" -gt 40 ] && [ "${#unchecked[@]}" -eq 0 ]; then
	ok "every row of the table (${#rows[@]}) is checked here or in the guest"
else
	not_ok "every row of the table (${#rows[@]}) is checked here or in the guest"
	printf 'unchecked: %s\n' "${unchecked[@]}" | diag
fi

# Every command envcryptctl offers has a row (variants such as status
# --keys are rows of their own), or prints KEY=value by design.
subcommands() { # subcommands ARGS...: the names listed under "Subcommands:"
	"$ENVCTL" "$@" --help 2>&1 | sed -n '/^Subcommands:/,$p' | sed -n 's/^  \([a-z0-9-]*\).*/\1/p'
}
missing=()
for command in $(subcommands); do
	case $command in
	kms | recovery | image)
		for sub in $(subcommands "$command"); do
			printf '%s\n' "${rows[@]}" | grep -qxF "$command $sub" || missing+=("$command $sub")
		done
		;;
	*)
		printf '%s\n' "${rows[@]}" "${NOT_JSON[@]}" | grep -qxF "$command" || missing+=("$command")
		;;
	esac
done
if [ "${#missing[@]}" -eq 0 ]; then
	ok "every command of envcryptctl --help has a row or prints KEY=value by design"
else
	not_ok "every command of envcryptctl --help has a row or prints KEY=value by design"
	printf 'no row: %s\n' "${missing[@]}" | diag
fi
tap_finish
