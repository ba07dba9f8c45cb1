# shellcheck shell=bash
# shellcheck disable=SC2034 # the KAIROS_* globals set here are read by the sourcing script
# Shared helpers for scripts/test and scripts/run-cluster: start and stop a throwaway
# Postgres and etcd on free 127.0.0.1 ports. Source it; never run it. It never
# touches a server it did not start, nor any system-wide service.
#
# Functions set these globals for the caller:
#   kairos_pg_start DIR [MAX_CONNECTIONS] -> KAIROS_PG_PORT, KAIROS_PG_ADMIN_URL
#   kairos_etcd_start DIR                 -> KAIROS_ETCD_PID, KAIROS_ETCD_URL
# and kairos_pg_ensure_database prints a database URL.

KAIROS_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

kairos_log() {
	printf '%s: %s\n' "${KAIROS_LOG_PREFIX:-kairos}" "$*" >&2
}

kairos_die() {
	kairos_log "error: $*"
	exit 1
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
kairos_port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a port on 127.0.0.1 that nothing listens on, below the ephemeral
# range so outgoing connections do not take it meanwhile. A race with another
# process is still possible: the start functions retry on a bind failure.
kairos_free_port() {
	local port attempt
	for attempt in $(seq 1 100); do
		port=$((20000 + RANDOM % 12000))
		if ! kairos_port_in_use "$port"; then
			echo "$port"
			return 0
		fi
	done
	kairos_die "no free port found after $attempt tries"
}

# Directory holding initdb and pg_ctl: the newest /usr/lib/postgresql/N/bin,
# else the directory of the initdb that PATH finds.
kairos_pg_bin_dir() {
	local newest
	newest="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
		sort -t/ -k5,5n | tail -n1)"
	if [[ -n "$newest" ]]; then
		dirname "$newest"
	elif command -v initdb >/dev/null; then
		dirname "$(command -v initdb)"
	else
		kairos_die "Postgres is not installed (no initdb): run scripts/deps"
	fi
}

# Runs a Postgres server binary, as the postgres user when we are root
# (initdb and postgres refuse to run as root).
kairos_pg_as_owner() {
	if [[ "$(id -u)" == 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# kairos_pg_start DIR [MAX_CONNECTIONS]
# Starts Postgres with its data in DIR/data (created by initdb on first use,
# reused after), its unix socket in DIR/sock and its log in DIR/postgres.log,
# listening on a free 127.0.0.1 port, fsync off, trusting local connections.
kairos_pg_start() {
	local dir="$1" max_connections="${2:-400}" bin port attempt
	bin="$(kairos_pg_bin_dir)"
	mkdir -p "$dir/sock"
	if [[ "$(id -u)" == 0 ]]; then
		id postgres >/dev/null 2>&1 || kairos_die "no postgres user to run Postgres as: run scripts/deps"
		chown postgres: "$dir" "$dir/sock"
		runuser -u postgres -- test -w "$dir" ||
			kairos_die "the postgres user cannot reach $dir (a parent directory is private); use a directory it can traverse"
	fi
	if [[ ! -f "$dir/data/PG_VERSION" ]]; then
		rm -rf "$dir/data"
		kairos_pg_as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C \
			--no-sync >"$dir/initdb.log" 2>&1 ||
			{ cat "$dir/initdb.log" >&2; kairos_die "initdb failed"; }
	fi
	# A server left running by an earlier, killed run on this data dir.
	if kairos_pg_as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
		kairos_log "stopping a Postgres left running in $dir"
		kairos_pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
	fi
	for attempt in 1 2 3 4 5; do
		port="$(kairos_free_port)"
		if kairos_pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
			-o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=$max_connections" \
			start >/dev/null; then
			KAIROS_PG_PORT="$port"
			KAIROS_PG_ADMIN_URL="postgres://postgres@127.0.0.1:$port/postgres"
			return 0
		fi
		if ! tail -n 20 "$dir/postgres.log" | grep -qiE 'could not bind|in use'; then
			break
		fi
		kairos_log "port $port was taken, retrying Postgres (attempt $attempt)"
	done
	tail -n 30 "$dir/postgres.log" >&2 || true
	kairos_die "Postgres did not start (log: $dir/postgres.log)"
}

# kairos_pg_stop DIR [MODE]: stops the Postgres of DIR if it runs (MODE: fast
# keeps the data consistent, immediate is quicker for throwaway data).
kairos_pg_stop() {
	local dir="$1" mode="${2:-fast}" bin
	[[ -f "$dir/data/postmaster.pid" ]] || return 0
	bin="$(kairos_pg_bin_dir)"
	kairos_pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m "$mode" -w stop >/dev/null 2>&1 || true
}

# kairos_pg_ensure_database ADMIN_URL NAME: creates database NAME unless it
# exists and prints its URL.
kairos_pg_ensure_database() {
	local admin_url="$1" name="$2" bin
	bin="$(kairos_pg_bin_dir)"
	if [[ "$("$bin/psql" "$admin_url" -XAtqc "SELECT 1 FROM pg_database WHERE datname = '$name'")" != 1 ]]; then
		"$bin/psql" "$admin_url" -Xqc "CREATE DATABASE \"$name\"" >/dev/null
	fi
	echo "${admin_url%/*}/$name"
}

# True when etcd at URL reports itself healthy.
kairos_etcd_healthy() {
	local hostport="${1#http://}"
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 2 bash -c '
		exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
		printf "GET /health HTTP/1.0\r\nHost: %s\r\n\r\n" "$1" >&3
		grep -q "\"health\":\"true\"" <&3
	' _ "$hostport" 2>/dev/null
}

# kairos_etcd_start DIR: starts a single-member etcd with its data in
# DIR/data (reused when present) and its log in DIR/etcd.log, on free
# 127.0.0.1 client and peer ports, and waits until it is healthy.
kairos_etcd_start() {
	local dir="$1" client_port peer_port attempt
	command -v etcd >/dev/null || kairos_die "etcd is not installed: run scripts/deps"
	mkdir -p "$dir"
	for attempt in 1 2 3 4 5; do
		client_port="$(kairos_free_port)"
		peer_port="$(kairos_free_port)"
		[[ "$client_port" != "$peer_port" ]] || continue
		# With an existing data dir etcd keeps its membership and ignores the
		# --initial-* flags, so new ports each start are fine.
		etcd --name kairos --data-dir "$dir/data" \
			--listen-client-urls "http://127.0.0.1:$client_port" \
			--advertise-client-urls "http://127.0.0.1:$client_port" \
			--listen-peer-urls "http://127.0.0.1:$peer_port" \
			--initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
			--initial-cluster "kairos=http://127.0.0.1:$peer_port" \
			--initial-cluster-state new \
			--logger zap --log-outputs stderr \
			</dev/null >>"$dir/etcd.log" 2>&1 &
		KAIROS_ETCD_PID=$!
		KAIROS_ETCD_URL="http://127.0.0.1:$client_port"
		for _ in $(seq 1 300); do
			if kairos_etcd_healthy "$KAIROS_ETCD_URL"; then
				return 0
			fi
			kill -0 "$KAIROS_ETCD_PID" 2>/dev/null || break
			sleep 0.1
		done
		kairos_etcd_stop
		if ! tail -n 20 "$dir/etcd.log" | grep -q 'address already in use'; then
			break
		fi
		kairos_log "a port was taken, retrying etcd (attempt $attempt)"
	done
	tail -n 30 "$dir/etcd.log" >&2 || true
	kairos_die "etcd did not become healthy within 30 s (log: $dir/etcd.log)"
}

# kairos_etcd_stop: stops the etcd started by kairos_etcd_start (SIGTERM,
# then SIGKILL after 10 s), if any.
kairos_etcd_stop() {
	local pid="${KAIROS_ETCD_PID:-}"
	[[ -n "$pid" ]] || return 0
	KAIROS_ETCD_PID=""
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
