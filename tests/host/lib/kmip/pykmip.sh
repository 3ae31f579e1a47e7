# Helpers for tests that need a KMIP server: a throwaway PKI made with
# openssl and a PyKMIP server (Debian python3-pykmip, run with the system
# /usr/bin/python3) on 127.0.0.1.  Source this file; every function works in
# the directory given to kmip_pki_make / kmip_server_start and leaves nothing
# behind once that directory is removed.
#
#   kmip_pki_make DIR            CA, server cert (IP:127.0.0.1, DNS:localhost),
#                                client certs "a" and "b" (clientAuth), an
#                                unrelated "rogue" CA and a client cert it signed
#   kmip_server_start DIR [STATE]
#                                starts the server on a free port, with its
#                                config, database and logs in STATE (default
#                                DIR); sets KMIP_PORT, KMIP_SERVER_PID and
#                                KMIP_START_SECONDS (time until it listened);
#                                with KMIP_RESTART_PORT set, on that port
#                                (a server started again on its STATE)
#   kmip_server_stop             stops it (by its pid)
#   kmip_stop_pid PID            stops one of several servers (by its pid)
#   kmip_copy_database FROM TO   copies a server's database (consistently,
#                                while it runs): a second server started on
#                                the copy holds the same keys, uids and owners
#   kmip_silent_start DIR        a listener that accepts TCP connections and
#                                never answers (a hung server); sets
#                                KMIP_SILENT_PORT and KMIP_SILENT_PID
#   kmip_write_endpoint_config DIR FILE CA CLIENT
#                                envcrypt TOML with the one endpoint "main"
#   kmip_write_config DIR FILE   envcrypt TOML with endpoints main (client a),
#                                other (client b), wrongca (client a trusting
#                                the rogue CA), untrusted (rogue client cert)
#                                and byname (client a, host "localhost")

KMIP_PYTHON=${KMIP_PYTHON:-/usr/bin/python3}
KMIP_TIMEOUT_MS=${KMIP_TIMEOUT_MS:-3000}
# How long to wait for the server to listen: a few seconds on a host, much
# longer in a TCG guest where Python starts slowly.
KMIP_START_TIMEOUT_S=${KMIP_START_TIMEOUT_S:-30}

kmip_have_pykmip() {
	# Finding the package, not importing the server: that import alone takes
	# a minute in a TCG guest, and kmip_server_start pays it once anyway.
	"$KMIP_PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("kmip") is None)' \
		2>/dev/null
}

# kmip_cert DIR NAME CA SUBJECT EXTENSIONS: an EC P-256 key and a certificate
# signed by CA.
kmip_cert() {
	local dir=$1 name=$2 ca=$3 subject=$4 extensions=$5
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "$subject" 2>/dev/null &&
	printf '%s\n' "$extensions" >"$dir/$name.ext" &&
	openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.pem" -CAkey "$dir/$ca.key" \
		-CAcreateserial -days 2 -out "$dir/$name.pem" -extfile "$dir/$name.ext" 2>/dev/null
}

kmip_ca() {
	local dir=$1 name=$2
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-keyout "$dir/$name.key" -out "$dir/$name.pem" -subj "/CN=envcrypt test $name" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
		2>/dev/null
}

kmip_pki_make() {
	local dir=$1
	mkdir -p "$dir" &&
	kmip_ca "$dir" ca &&
	kmip_ca "$dir" rogue-ca &&
	kmip_cert "$dir" server ca "/CN=localhost" \
		"subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature" &&
	kmip_cert "$dir" client-a ca "/CN=envcrypt-host-a" \
		"extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature" &&
	kmip_cert "$dir" client-b ca "/CN=envcrypt-host-b" \
		"extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature" &&
	kmip_cert "$dir" client-rogue rogue-ca "/CN=envcrypt-host-a" \
		"extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
}

# Bash's /dev/tcp rather than a Python one-liner per probe: in a TCG guest
# every Python start costs seconds.
kmip_port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A port nothing listens on, from the range Linux does not hand out as
# ephemeral ports by default.
kmip_free_port() {
	local port tries
	for ((tries = 0; tries < 50; tries++)); do
		port=$((10000 + RANDOM % 20000))
		kmip_port_open "$port" || {
			echo "$port"
			return 0
		}
	done
	return 1
}

kmip_server_start() {
	local dir=$1 state=${2:-$1} started=$SECONDS
	local deadline=$((started + KMIP_START_TIMEOUT_S))
	# KMIP_RESTART_PORT: the port of a server started again on its state,
	# so that the CMK URIs that name it still resolve.
	if [ -n "${KMIP_RESTART_PORT:-}" ]; then
		KMIP_PORT=$KMIP_RESTART_PORT
	else
		KMIP_PORT=$(kmip_free_port) || return 1
	fi
	mkdir -p "$state/policies"
	cat >"$state/server.conf" <<CONF
[server]
hostname=127.0.0.1
port=$KMIP_PORT
certificate_path=$dir/server.pem
key_path=$dir/server.key
ca_path=$dir/ca.pem
auth_suite=TLS1.2
policy_path=$state/policies
enable_tls_client_auth=True
logging_level=INFO
database_path=$state/pykmip.db
CONF
	"$KMIP_PYTHON" -c 'import sys; from kmip.services.server import server; sys.exit(server.main())' \
		-f "$state/server.conf" -l "$state/server.log" >"$state/server.out" 2>&1 &
	KMIP_SERVER_PID=$!
	# Bounded wait for the listening socket.
	while ! kmip_port_open "$KMIP_PORT"; do
		if ! kill -0 "$KMIP_SERVER_PID" 2>/dev/null; then
			echo "# PyKMIP server exited; its output:" >&2
			sed 's/^/#   /' "$state/server.out" >&2
			return 1
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "# PyKMIP server not listening on 127.0.0.1:$KMIP_PORT after $KMIP_START_TIMEOUT_S s" >&2
			return 1
		fi
		sleep 0.2
	done
	KMIP_START_SECONDS=$((SECONDS - started))
}

kmip_stop_pid() {
	[ -n "${1:-}" ] || return 0
	kill "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	return 0
}

kmip_server_stop() {
	kmip_stop_pid "${KMIP_SERVER_PID:-}"
	KMIP_SERVER_PID=
}

# SQLite's online backup: a consistent copy even while the server writes.
kmip_copy_database() {
	"$KMIP_PYTHON" -c 'import sqlite3, sys
source = sqlite3.connect(sys.argv[1])
target = sqlite3.connect(sys.argv[2])
source.backup(target)
target.close()' "$1" "$2"
}

# Listens with a backlog but never accepts: the kernel completes the TCP
# handshake, and the TLS handshake then waits for an answer that never
# comes.  The port is chosen by the kernel and written to DIR/silent.port.
kmip_silent_start() {
	local dir=$1 tries
	rm -f "$dir/silent.port"
	"$KMIP_PYTHON" -c 'import socket, sys, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
with open(sys.argv[1] + ".tmp", "w") as out:
    out.write(str(listener.getsockname()[1]))
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(3600)' "$dir/silent.port" &
	KMIP_SILENT_PID=$!
	for ((tries = 0; tries < 100; tries++)); do
		if [ -s "$dir/silent.port" ]; then
			KMIP_SILENT_PORT=$(cat "$dir/silent.port")
			return 0
		fi
		sleep 0.1
	done
	return 1
}

kmip_endpoint_toml() {
	local dir=$1 name=$2 ca=$3 client=$4 host=${5:-127.0.0.1}
	cat <<TOML
[kms.kmip.$name]
host = "$host"
port = $KMIP_PORT
ca = "$dir/$ca.pem"
cert = "$dir/$client.pem"
key = "$dir/$client.key"
timeout_ms = $KMIP_TIMEOUT_MS

TOML
}

kmip_write_config() {
	local dir=$1 file=$2
	{
		kmip_endpoint_toml "$dir" main ca client-a
		kmip_endpoint_toml "$dir" other ca client-b
		kmip_endpoint_toml "$dir" wrongca rogue-ca client-a
		kmip_endpoint_toml "$dir" untrusted ca client-rogue
		kmip_endpoint_toml "$dir" byname ca client-a localhost
	} >"$file"
}

kmip_write_endpoint_config() {
	local dir=$1 file=$2 ca=$3 client=$4
	kmip_endpoint_toml "$dir" main "$ca" "$client" >"$file"
}
