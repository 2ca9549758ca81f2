#!/usr/bin/env bash
# A two-node Ray cluster and a Redis on this one machine, for tests and trying things out.
#
#   deploy/local-cluster.sh up   [DIR]   start Redis, a Ray head node and a Ray worker node
#   deploy/local-cluster.sh down [DIR]   stop everything started from DIR, nothing else
#
# DIR (default /tmp/tt-cluster; keep it short: Ray puts unix sockets under it) receives
# `env`, a file to source: RAY_ADDRESS (the GCS, for ray.init), TAUTUNE_DASHBOARD (the
# Jobs API, for `tautune submit --address`), TAUTUNE_REDIS_URL and RAY_AUTH_MODE=token.
# Each node gets one CPU. Token authentication stays on: a token is generated once if
# ~/.ray/auth_token does not exist.
set -euo pipefail

cmd="${1:-}"
dir="${2:-/tmp/tt-cluster}"
py="${PYTHON:-python}"

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

down() {
    # Every process whose command line names DIR, the redis-server running in DIR (it
    # rewrites its command line and daemonizes into its --dir), and all their descendants.
    "$py" - "$dir" <<'PY'
import os, signal, sys, time
mark = sys.argv[1]
home = os.path.realpath(mark)
procs = {}
for e in os.listdir("/proc"):
    if not e.isdigit():
        continue
    try:
        cmd = open(f"/proc/{e}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        ppid = int(open(f"/proc/{e}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        continue
    try:
        comm = open(f"/proc/{e}/comm").read().strip()
        if comm.startswith("redis-server") and os.path.realpath(f"/proc/{e}/cwd") == home:
            cmd += " " + mark
    except OSError:
        pass
    procs[int(e)] = (ppid, cmd)
ancestors, p = set(), os.getpid()
while p > 1 and p in procs:  # never this script, nor the shells that called it
    ancestors.add(p)
    p = procs[p][0]
ancestors.add(os.getpid())
roots = {p for p, (_, c) in procs.items() if mark in c and p not in ancestors}
found, grew = set(roots), True
while grew:
    kids = {p for p, (pp, _) in procs.items() if pp in found} - found - ancestors
    found |= kids
    grew = bool(kids)
for sig in (signal.SIGTERM, signal.SIGKILL):
    for p in found:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z" for p in found):
        time.sleep(0.2)
print(f"stopped {len(found)} processes under {mark}")
PY
}

up() {
    mkdir -p "$dir"
    chmod 700 "$dir"
    export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
    if [ ! -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ] && [ -z "${RAY_AUTH_TOKEN:-}" ]; then
        ray get-auth-token --generate >/dev/null
    fi
    local redis_port gcs_port dash_port password redis_bin
    redis_port="$(free_port)"; gcs_port="$(free_port)"; dash_port="$(free_port)"
    password="$("$py" -c 'import secrets; print(secrets.token_hex(16))')"
    redis_bin="$("$py" -c 'from trials.embedded import find_redis_server; print(find_redis_server())')"
    "$redis_bin" --bind 127.0.0.1 --port "$redis_port" --requirepass "$password" \
        --appendonly yes --save "" --dir "$dir" --daemonize yes \
        --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" >/dev/null
    ray start --head --node-ip-address 127.0.0.1 --port "$gcs_port" --num-cpus 1 \
        --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$dash_port" \
        --temp-dir "$dir/ray" --disable-usage-stats >"$dir/head.log" 2>&1
    ray start --address "127.0.0.1:$gcs_port" --node-ip-address 127.0.0.1 --num-cpus 1 \
        --temp-dir "$dir/ray" --node-manager-port 0 --object-manager-port 0 \
        --dashboard-agent-listen-port 0 --dashboard-agent-grpc-port 0 \
        --runtime-env-agent-port 0 --metrics-export-port 0 >"$dir/worker.log" 2>&1
    cat >"$dir/env" <<ENV
export RAY_ADDRESS=127.0.0.1:$gcs_port
export TAUTUNE_DASHBOARD=http://127.0.0.1:$dash_port
export TAUTUNE_REDIS_URL=redis://:$password@127.0.0.1:$redis_port/0
export RAY_AUTH_MODE=token
ENV
    # Wait until both nodes are up and the Jobs API answers.
    "$py" - "$dir" "127.0.0.1:$gcs_port" "http://127.0.0.1:$dash_port" <<'PY'
import sys, time
deadline, err = time.time() + 120, None
while True:
    try:
        import ray
        ray.init(address=sys.argv[2], logging_level="ERROR", log_to_driver=False)
        alive = sum(1 for n in ray.nodes() if n["Alive"])
        ray.shutdown()
        from ray.job_submission import JobSubmissionClient
        JobSubmissionClient(sys.argv[3]).list_jobs()  # the Jobs API answers, with the token
        if alive >= 2:
            break
        err = f"{alive} node(s) alive"
    except Exception as e:  # noqa: BLE001 - still starting
        err = e
    if time.time() > deadline:
        sys.exit(f"cluster under {sys.argv[1]} not ready after 120 s: {err!r}")
    time.sleep(1)
PY
    echo "cluster up: source $dir/env"
}

case "$cmd" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down [DIR]" >&2; exit 2 ;;
esac
