#!/usr/bin/env bash
# The comparison side of the distributed benchmark (issue 16): Celery (Redis broker and result
# backend) and RQ running the same jobs as stealpool's distributed executor, on one Redis on
# loopback, with 1, 2 and 4 worker processes. Prints a markdown table of jobs/s (and MiB/s for
# the 64 KiB payload jobs).
#
# Usage: benches/distributed/run.sh [--stealpool-cmd CMD] [--workers "1 2 4"] [--only SYSTEMS]
#   --stealpool-cmd CMD  also run our own bench in the same run, on the same Redis (env
#                        STEALPOOL_BENCH_CMD does the same). CMD is run through `sh -c` as
#                        `CMD WORKERS N_SUBMIT N_MAP N_PAYLOAD` with REDIS_URL and CHUNK in its
#                        environment; it starts (and stops) its own WORKERS worker processes and
#                        prints one line per scenario, `submit|map|payload SECONDS JOBS`, for the
#                        measured part only, exactly like celery_rq_bench.py. For example:
#                        --stealpool-cmd "cargo bench --features redis --bench distributed --"
#   --workers LIST       the worker counts (default "1 2 4")
#   --only SYSTEMS       a subset of "celery rq stealpool"
# Job counts (env): CELERY_SUBMIT=1000 CELERY_MAP=4000 CELERY_PAYLOAD=200, RQ_SUBMIT=200
# RQ_MAP=2000 RQ_PAYLOAD=50 (RQ forks a process per job), STEALPOOL_SUBMIT=20000
# STEALPOOL_MAP=100000 STEALPOOL_PAYLOAD=2000, CHUNK=100 (jobs per chunk in `map`).
#
# Celery and RQ are installed with pip into a venv under target/ (once); when pip cannot, they
# are skipped with a note. The script starts its own redis-server on a free loopback port in a
# temporary directory, and on exit (also on an error or Ctrl-C) stops every worker and the server
# it started, and removes the directory. It touches no other process.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VENV="$ROOT/target/distributed-bench-venv"
STEALPOOL_CMD=${STEALPOOL_BENCH_CMD:-}
WORKERS="1 2 4"
ONLY="celery rq stealpool"
while [ $# -gt 0 ]; do
    case "$1" in
        --stealpool-cmd) STEALPOOL_CMD=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
export CHUNK=${CHUNK:-100}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/stealpool-distbench.XXXXXX")
export BENCH_PIDFILE="$TMP/worker-groups" BENCH_LOG="$TMP/workers.log"
REDIS_PID="" RUNNING_PID=""

cleanup() {
    local status=$?
    # The bench process that runs now (its own process group), then any worker group it started.
    if [ -n "$RUNNING_PID" ]; then kill -TERM -- "-$RUNNING_PID" 2>/dev/null || true; fi
    if [ -f "$BENCH_PIDFILE" ]; then
        while read -r pgid; do kill -TERM -- "-$pgid" 2>/dev/null || true; done < "$BENCH_PIDFILE"
        sleep 1
        while read -r pgid; do kill -KILL -- "-$pgid" 2>/dev/null || true; done < "$BENCH_PIDFILE"
    fi
    if [ -n "$RUNNING_PID" ]; then kill -KILL -- "-$RUNNING_PID" 2>/dev/null || true; wait "$RUNNING_PID" 2>/dev/null || true; fi
    if [ -n "$REDIS_PID" ]; then kill -TERM "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
    if [ $status -ne 0 ] && [ -s "$BENCH_LOG" ]; then echo "--- worker log (last lines) ---" >&2; tail -20 "$BENCH_LOG" >&2; fi
    rm -rf "$TMP"
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() { echo "note: $*" >&2; }
wants() { case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# --- Celery and RQ, once, in a venv under target/ ---------------------------------------------------
PY=""
if wants celery || wants rq; then
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import celery, rq, redis' 2>/dev/null; then
        PY="$VENV/bin/python"
    elif python3 -m venv "$VENV" >"$TMP/pip.log" 2>&1 \
        && "$VENV/bin/pip" install -q 'celery[redis]' rq redis >>"$TMP/pip.log" 2>&1; then
        PY="$VENV/bin/python"
    else
        note "pip could not install Celery and RQ (see below); their rows are skipped"
        tail -5 "$TMP/pip.log" >&2 || true
    fi
fi

# --- our own redis-server --------------------------------------------------------------------------
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no --dir "$TMP" \
    --logfile "$TMP/redis.log" --daemonize no >/dev/null 2>&1 &
REDIS_PID=$!
export REDIS_URL="redis://127.0.0.1:$PORT/0"
ping_redis() { exec 3<>"/dev/tcp/127.0.0.1/$PORT" && printf 'PING\r\n' >&3 && read -r -t 1 reply <&3 && exec 3>&- && [[ $reply == +PONG* ]]; }
for _ in $(seq 100); do ping_redis 2>/dev/null && break; sleep 0.05; done
ping_redis || { echo "redis-server did not start (see $TMP/redis.log)" >&2; exit 1; }
flush() { exec 3<>"/dev/tcp/127.0.0.1/$PORT"; printf 'FLUSHALL\r\n' >&3; read -r -t 5 _ <&3; exec 3>&-; }

# --- the runs ----------------------------------------------------------------------------------------
RESULTS="$TMP/results"
: >"$RESULTS"
# run SYSTEM WORKERS CMD...: runs CMD in its own process group, records its `SCENARIO SECONDS JOBS` lines.
run() {
    local system=$1 workers=$2
    shift 2
    flush
    setsid "$@" >"$TMP/out" &
    RUNNING_PID=$!
    if ! wait "$RUNNING_PID"; then RUNNING_PID=""; echo "$system with $workers workers failed" >&2; return 1; fi
    RUNNING_PID=""
    # Other lines (a build's chatter, say) are shown, not measured.
    while read -r line; do
        if [[ $line =~ ^(submit|map|payload)\ ([0-9.]+)\ ([0-9]+)$ ]]; then
            echo "$system $workers $line" >>"$RESULTS"
        else
            echo "$system: $line" >&2
        fi
    done <"$TMP/out"
}

for w in $WORKERS; do
    if [ -n "$PY" ] && wants celery; then
        run celery "$w" "$PY" "$HERE/celery_rq_bench.py" celery "$w" "${CELERY_SUBMIT:-1000}" "${CELERY_MAP:-4000}" "${CELERY_PAYLOAD:-200}"
    fi
    if [ -n "$PY" ] && wants rq; then
        run rq "$w" "$PY" "$HERE/celery_rq_bench.py" rq "$w" "${RQ_SUBMIT:-200}" "${RQ_MAP:-2000}" "${RQ_PAYLOAD:-50}"
    fi
    if [ -n "$STEALPOOL_CMD" ] && wants stealpool; then
        run stealpool "$w" sh -c "cd '$ROOT' && $STEALPOOL_CMD \"\$@\"" sh "$w" "${STEALPOOL_SUBMIT:-20000}" "${STEALPOOL_MAP:-100000}" "${STEALPOOL_PAYLOAD:-2000}"
    fi
done
if [ -z "$STEALPOOL_CMD" ]; then note "no --stealpool-cmd given: only the comparison rows"; fi

# --- the table ------------------------------------------------------------------------------------
echo
echo "Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') on loopback, $(nproc) cores, $(uname -sr); chunk $CHUNK; jobs/s (64 KiB payload: jobs/s and MiB/s)"
echo
python3 - "$RESULTS" <<'PYEOF'
import sys
rows = {}
for line in open(sys.argv[1]):
    system, workers, scenario, seconds, jobs = line.split()
    rows.setdefault((system, int(workers)), {})[scenario] = (float(seconds), int(jobs))
print("| system | workers | submit (jobs/s) | map, chunked (jobs/s) | 64 KiB payload (jobs/s) | 64 KiB payload (MiB/s) |")
print("|---|---:|---:|---:|---:|---:|")
order = {"stealpool": 0, "celery": 1, "rq": 2}
for (system, workers), r in sorted(rows.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])):
    def rate(s):
        if s not in r:
            return "-"
        seconds, jobs = r[s]
        return f"{jobs / seconds:,.0f}"
    mib = "-"
    if "payload" in r:
        seconds, jobs = r["payload"]
        mib = f"{jobs * 64 / 1024 / seconds:,.1f}"
    n = lambda s: f" ({r[s][1]})" if s in r else ""
    print(f"| {system} | {workers} | {rate('submit')}{n('submit')} | {rate('map')}{n('map')} | {rate('payload')}{n('payload')} | {mib} |")
print()
print("(in parentheses: the jobs of each run)")
PYEOF
