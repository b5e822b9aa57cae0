# Shared by deploy/ha/{up,down,failover-test,broker-test,scale-out}: ports, paths and
# helpers. Everything listens on 127.0.0.1; every process started is recorded in
# $HA_DIR/pids/<name>.pid and stopped by that id (deploy/ha/down).
# shellcheck shell=bash

set -euo pipefail

HA_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HA_DIR=${HA_DIR:-/tmp/ledger-ha}
HA_BIN=${HA_BIN:-$HA_REPO/target/release}
HA_APIS=${HA_APIS:-3}          # ledger-api serve processes behind the balancer (1 to 3)
HA_NATS=${HA_NATS:-1}          # 0: no NATS cluster, no relay
HA_BALANCE=${HA_BALANCE:-source}  # see docs/OPERATIONS.md: a tenant on one process

# Ports (none of the system's 5432, 4222, 8080).
ETCD_CLIENT=25379
ETCD_PEER=25380
PG_PORTS=(25432 25433)          # pg1, pg2
PATRONI_PORTS=(25008 25009)     # their Patroni REST APIs
HAPROXY_PG=25000                # -> the current primary
HAPROXY_API=25080               # -> the API processes
HAPROXY_STATS=25404
API_PORTS=(25081 25082 25083)
NATS_PORTS=(25222 25223 25224)
NATS_CLUSTER_PORTS=(25246 25247 25248)
NATS_MONITOR_PORTS=(25822 25823 25824)

PG_SUPERUSER_PASSWORD=ha-superuser
PG_REPLICATION_PASSWORD=ha-replicator
LEDGER_OWNER_PASSWORD=ha-owner
LEDGER_SERVICE_PASSWORD=ha-service
SUPERUSER_URL="postgres://postgres:${PG_SUPERUSER_PASSWORD}@127.0.0.1:${HAPROXY_PG}/ledger"
OWNER_URL="postgres://ledger_owner:${LEDGER_OWNER_PASSWORD}@127.0.0.1:${HAPROXY_PG}/ledger"
SERVICE_URL="postgres://ledger_service:${LEDGER_SERVICE_PASSWORD}@127.0.0.1:${HAPROXY_PG}/ledger"
NATS_URLS="nats://127.0.0.1:${NATS_PORTS[0]},nats://127.0.0.1:${NATS_PORTS[1]},nats://127.0.0.1:${NATS_PORTS[2]}"
API_BASE="http://127.0.0.1:${HAPROXY_API}"
PG_BIN=/usr/lib/postgresql/15/bin

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

now_ms() { date +%s%3N; }

# wait_for DESCRIPTION SECONDS COMMAND...: runs COMMAND every 0.5 s until it succeeds,
# at most SECONDS.
wait_for() {
    local what=$1 seconds=$2
    shift 2
    local tries=$((seconds * 2)) i
    for ((i = 0; i < tries; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    die "$what: not ready after ${seconds}s"
}

# start NAME LOGFILE COMMAND...: starts COMMAND in the background (its own process
# group), records its pid.
start() {
    local name=$1 logfile=$2
    shift 2
    setsid "$@" >"$logfile" 2>&1 < /dev/null &
    echo $! >"$HA_DIR/pids/$name.pid"
    log "started $name (pid $!)"
}

pid_of() { cat "$HA_DIR/pids/$1.pid" 2>/dev/null || true; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# stop_pid PID [SIGNAL]: the signal (TERM by default), then up to 15 s, then KILL.
stop_pid() {
    local pid=$1 signal=${2:-TERM} i
    alive "$pid" || return 0
    kill "-$signal" "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        alive "$pid" || return 0
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# start_patroni N: node N's Patroni, which runs its PostgreSQL. PostgreSQL refuses to
# run as root, so Patroni (and so postgres) runs as `postgres`; setpriv execs, so the
# pid recorded is Patroni's own.
start_patroni() {
    start "patroni$1" "$HA_DIR/logs/patroni$1.log" setpriv --reuid=postgres --regid=postgres \
        --init-groups env HOME="$HA_DIR/pg$1" patroni "$HA_DIR/pg$1/patroni.yml"
}

# The PostgreSQL postmaster of node N (1 or 2), from its data directory.
postmaster_pid() { head -1 "$HA_DIR/pg$1/data/postmaster.pid" 2>/dev/null || true; }

# Patroni's role of node N: 200 from /primary on the leader.
is_primary() { curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:${PATRONI_PORTS[$(($1 - 1))]}/primary"; }
is_sync_standby() { curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:${PATRONI_PORTS[$(($1 - 1))]}/sync"; }

# The node (1 or 2) that is primary now, or nothing.
current_primary() {
    local n
    for n in 1 2; do
        if is_primary "$n"; then echo "$n"; return 0; fi
    done
    return 1
}

su_psql() { PGPASSWORD=$PG_SUPERUSER_PASSWORD psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$HAPROXY_PG" -U postgres "$@"; }

# An API key of a throwaway tenant, and the deployment's public keys (for ledger-audit).
fetch_ledger_keys() {
    local out=$1 slug=${2:-keys-$RANDOM} created invite key
    created=$(LEDGER_MASTER_KEY_FILE=$HA_DIR/master.key "$HA_BIN/ledger-api" \
        --database-url "$SERVICE_URL" --keys-dir "$HA_DIR/keys" \
        tenant create "$slug" --name "$slug" --admin Admin)
    invite=$(jq -r .invite <<<"$created")
    key=$(curl -fsS --max-time 10 -H 'content-type: application/json' \
        -d "{\"invite\":\"$invite\"}" "$API_BASE/v1/invites/redeem" | jq -r .api_key)
    curl -fsS --max-time 10 -H "authorization: Bearer $key" "$API_BASE/v1/ledger/keys" >"$out"
}
