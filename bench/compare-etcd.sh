#!/usr/bin/env bash
# Measures Ordo and etcd side by side on this machine and writes the figures to bench/results/.
#
# What it does, every time it runs (it is safe to run again; each run starts from empty data
# directories and rewrites the results of the systems it measured):
#   1. installs etcd 3.4 and etcdctl from Debian (`etcd-server`, `etcd-client`) if missing, and
#      stops any etcd service the package started;
#   2. builds the load generator (`ordo bench`, or the `ordo_bench` example of the ordo-bench
#      crate while the `ordo` binary does not exist) and the release `ordo` binary;
#   3. for each system in $SYSTEMS: starts a three-member cluster on 127.0.0.1 (data
#      directories under $DATA_DIR, on disk, never tmpfs), waits for a leader, runs the matrix,
#      and stops the cluster;
#   4. writes bench/results/results.{md,json} and throughput.svg / latency.svg
#      (bench/report.py, python3 without third-party packages).
# Every process it starts is stopped on exit (trap), by PID.
#
# Durability is the same on both sides: every write is fsynced on a majority before it is
# acknowledged. etcd fsyncs its WAL before acknowledging and has no switch to stop it; Ordo
# runs with `--fsync always`. Both keep their data directories on the same filesystem.
#
# The matrix: workloads `put` and `get` (linearizable), 256-byte values, 1, 16, 64 and 256
# clients over min(clients, 8) gRPC connections, each cell $WARMUP_S s of warmup then
# $DURATION_S s measured. By default every connection goes to the leader ($TARGET=leader);
# TARGET=all spreads them over the three members (followers forward to the leader).
#
# Settings (environment): SYSTEMS ("etcd ordo"), CLIENTS ("1 16 64 256"), WORKLOADS
# ("put get"), DURATION_S (10), WARMUP_S (2), VALUE_BYTES (256), PUT_KEY_SPACE (100000),
# GET_KEY_SPACE (1000), TARGET (leader), DATA_DIR (target/bench-data), RESULTS_DIR
# (bench/results), ORDO_BIN (an `ordo` binary to use instead of building one),
# ORDO_PEER_TLS (1: the Ordo nodes talk mutual TLS with certificates `ordo cert` makes).
#
# Usage: bench/compare-etcd.sh                    # both systems
#        SYSTEMS=etcd bench/compare-etcd.sh       # etcd only

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS="${RESULTS_DIR:-$ROOT/bench/results}"
SYSTEMS="${SYSTEMS:-etcd ordo}"
CLIENTS="${CLIENTS:-1 16 64 256}"
WORKLOADS="${WORKLOADS:-put get}"
DURATION_S="${DURATION_S:-10}"
WARMUP_S="${WARMUP_S:-2}"
VALUE_BYTES="${VALUE_BYTES:-256}"
PUT_KEY_SPACE="${PUT_KEY_SPACE:-100000}"
GET_KEY_SPACE="${GET_KEY_SPACE:-1000}"
TARGET="${TARGET:-leader}"
DATA_DIR="${DATA_DIR:-$ROOT/target/bench-data}"
ORDO_BIN="${ORDO_BIN:-}"
ORDO_PEER_TLS="${ORDO_PEER_TLS:-0}"
CONNS_MAX=8
# Bounded waits: a cluster that has no leader within this many half-seconds is an error.
READY_TRIES=120

log() { printf '[compare-etcd %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

STARTED_PIDS=()

stop_started() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    STARTED_PIDS=()
}
trap stop_started EXIT

case "$TARGET" in leader|all) ;; *) die "TARGET=$TARGET: give leader or all" ;; esac

# --- 1. etcd from Debian ----------------------------------------------------------------------
install_etcd() {
    if command -v etcd >/dev/null && command -v etcdctl >/dev/null; then
        return
    fi
    log "installing etcd-server and etcd-client from Debian"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client
    # The package may start a system service; these benchmarks run their own members only.
    if [ -d /run/systemd/system ]; then
        systemctl disable --now etcd 2>/dev/null || true
    elif [ -x /etc/init.d/etcd ]; then
        /etc/init.d/etcd stop 2>/dev/null || true
    fi
}
install_etcd
ETCD_VERSION="$(etcd --version | head -1)"
case "$ETCD_VERSION" in *" 3.4."*) ;; *) log "warning: expected etcd 3.4, found: $ETCD_VERSION" ;; esac

# --- 2. binaries ------------------------------------------------------------------------------
cd "$ROOT"
BENCH=()
if [ -z "$ORDO_BIN" ] && [ -f crates/ordo/Cargo.toml ]; then
    log "building the release ordo binary"
    cargo build --release -p ordo
    ORDO_BIN="$ROOT/target/release/ordo"
fi
if [ -n "$ORDO_BIN" ] && "$ORDO_BIN" bench --help >/dev/null 2>&1; then
    BENCH=("$ORDO_BIN" bench)
else
    log "building the load generator (the ordo_bench example of ordo-bench)"
    cargo build --release -p ordo-bench --example ordo_bench
    BENCH=("$ROOT/target/release/examples/ordo_bench")
fi

# --- 3. clusters ------------------------------------------------------------------------------
mkdir -p "$DATA_DIR" "$RESULTS"
if [ "$(stat -f -c %T "$DATA_DIR")" = "tmpfs" ]; then
    die "$DATA_DIR is on tmpfs, where fsync costs nothing; set DATA_DIR to a directory on disk"
fi

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports() {
    local port
    for port in "$@"; do
        port_free "$port" || die "port $port on 127.0.0.1 is in use; stop what listens there"
    done
}

# Prints the client endpoints of a running cluster, the leader's first (or all, in order).
endpoints_when_ready() {
    local endpoints="$1" status leader
    for _ in $(seq 1 "$READY_TRIES"); do
        if status="$(ETCDCTL_API=3 etcdctl --endpoints "$endpoints" --command-timeout=2s \
            endpoint status -w json 2>/dev/null)"; then
            leader="$(python3 -c '
import json, sys
rows = json.load(sys.stdin)
# etcdctl leaves zero fields out of its JSON: a member that knows no leader has no "leader".
ids = {r["Status"]["header"].get("member_id", 0) for r in rows}
leaders = {r["Status"].get("leader", 0) for r in rows}
if len(rows) == 3 and len(leaders) == 1 and leaders <= ids and 0 not in leaders:
    print(next(r["Endpoint"] for r in rows if r["Status"]["header"].get("member_id") in leaders))
' <<<"$status" || true)"
            if [ -n "$leader" ]; then
                if [ "$TARGET" = leader ]; then
                    echo "$leader"
                else
                    echo "$leader,$(tr ',' '\n' <<<"$endpoints" | grep -vx "$leader" | paste -sd,)"
                fi
                return 0
            fi
        fi
        sleep 0.5
    done
    return 1
}

start_etcd() {
    local dir="$DATA_DIR/etcd" cluster="" i
    rm -rf "$dir" && mkdir -p "$dir"
    check_ports 23791 23792 23793 23801 23802 23803
    for i in 1 2 3; do cluster+="${cluster:+,}e$i=http://127.0.0.1:2380$i"; done
    for i in 1 2 3; do
        etcd --name "e$i" --data-dir "$dir/e$i" \
            --listen-client-urls "http://127.0.0.1:2379$i" \
            --advertise-client-urls "http://127.0.0.1:2379$i" \
            --listen-peer-urls "http://127.0.0.1:2380$i" \
            --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token ordo-bench --logger zap --log-outputs stderr \
            >"$dir/e$i.log" 2>&1 &
        STARTED_PIDS+=("$!")
    done
    CLUSTER_ENDPOINTS="127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
}

start_ordo() {
    local dir="$DATA_DIR/ordo" peers="" i
    rm -rf "$dir" && mkdir -p "$dir"
    check_ports 24791 24792 24793 24801 24802 24803 24811 24812 24813
    for i in 1 2 3; do
        peers+="${peers:+,}$i=127.0.0.1:2480$i"
    done
    local -a tls=()
    if [ "$ORDO_PEER_TLS" = 1 ]; then
        "$ORDO_BIN" cert --dir "$dir/certs" --nodes 3 >/dev/null
        tls=(--peer-cert-file "$dir/certs/node-{id}.pem" --peer-key-file "$dir/certs/node-{id}-key.pem"
            --peer-trusted-ca-file "$dir/certs/ca.pem")
    fi
    for i in 1 2 3; do
        "$ORDO_BIN" server --id "$i" --data-dir "$dir/n$i" \
            --client-addr "127.0.0.1:2479$i" --peer-addr "127.0.0.1:2480$i" \
            --admin-addr "127.0.0.1:2481$i" --peers "$peers" \
            --cluster-token ordo-bench --fsync always \
            "${tls[@]//\{id\}/$i}" \
            >"$dir/n$i.log" 2>&1 &
        STARTED_PIDS+=("$!")
    done
    CLUSTER_ENDPOINTS="127.0.0.1:24791,127.0.0.1:24792,127.0.0.1:24793"
}

system_version() {
    case "$1" in
        etcd) echo "$ETCD_VERSION" ;;
        ordo) echo "$("$ORDO_BIN" --version 2>/dev/null || echo ordo) ($ORDO_BIN)" ;;
    esac
}

run_matrix() {
    local system="$1" endpoints="$2" out="$3" workload clients conns key_space line
    for workload in $WORKLOADS; do
        for clients in $CLIENTS; do
            conns=$((clients < CONNS_MAX ? clients : CONNS_MAX))
            key_space=$PUT_KEY_SPACE
            [ "$workload" = put ] || key_space=$GET_KEY_SPACE
            log "$system: $workload with $clients clients over $conns connections"
            if line="$("${BENCH[@]}" --endpoints "$endpoints" --workload "$workload" \
                --consistency l --clients "$clients" --conns "$conns" \
                --value-bytes "$VALUE_BYTES" --key-space "$key_space" --key-prefix "bench/" \
                --duration-s "$DURATION_S" --warmup-s "$WARMUP_S" --label "$system" --json)"; then
                echo "$line" >>"$out"
                python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print("  %9.0f ops/s  p50 %7.2f ms  p99 %7.2f ms  errors %d" % (r["ops_per_s"],
      r["latency_us_p50"] / 1000, r["latency_us_p99"] / 1000, r["errors"]), file=sys.stderr)
' "$line"
            else
                log "$system: the $workload cell with $clients clients failed (see above)"
            fi
        done
    done
}

measure() {
    local system="$1" out="$RESULTS/runs-$1.jsonl" meta="$RESULTS/meta-$1.json" endpoints
    case "$system" in
        etcd) start_etcd ;;
        ordo)
            if [ -z "$ORDO_BIN" ]; then
                log "ordo: skipped, no ordo binary yet (crates/ordo missing; set ORDO_BIN)"
                return
            fi
            start_ordo
            ;;
        *) die "unknown system $system in SYSTEMS (give etcd and/or ordo)" ;;
    esac
    endpoints="$(endpoints_when_ready "$CLUSTER_ENDPOINTS")" ||
        die "$system: no leader after $((READY_TRIES / 2)) s; see the logs in $DATA_DIR/$system"
    log "$system: leader ready; endpoints $endpoints"
    : >"$out"
    python3 -c '
import json, sys
system, version, load, cpus, target, started = sys.argv[1:7]
json.dump({"system": system, "version": version, "loadavg_at_start": load, "cpus": int(cpus),
           "target": target, "started_utc": started}, open(sys.argv[7], "w"))
' "$system" "$(system_version "$system")" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)" \
        "$TARGET" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$meta"
    run_matrix "$system" "$endpoints" "$out"
    stop_started
    # Keep the members' logs, drop their data (about a gigabyte after a full matrix).
    find "$DATA_DIR/$system" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
}

for system in $SYSTEMS; do
    measure "$system"
done

# --- 4. results -------------------------------------------------------------------------------
python3 "$ROOT/bench/report.py" "$RESULTS"
log "results written to $RESULTS"
