# What every benchmark script needs, sourced from the repository root: the tools it drives
# (installed through apt when missing), free ports, the core layout, and reading the
# `key=value` lines bench/loadgen prints.

# Installs what is missing; arguments are `command:package` pairs.
install_missing() {
    local missing=() pair
    for pair in "$@" taskset:util-linux; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The server under test on core 1, load generators on core 0 (one core: both on 0).
server_core=1
load_core=0
[ "$(nproc)" -lt 2 ] && server_core=0

# `field LINE KEY`: the value of KEY in a line of key=value pairs.
field() { echo "$1" | tr ' ' '\n' | awk -F= -v key="$2" '$1 == key {print $2}'; }

# A scratch folder ($work, readable by nginx's workers, which run as another user) and the
# processes to stop ($pids, plus any daemon that wrote a *.pid file there), all cleaned up
# when the script exits.
start_scratch() {
    work=$(mktemp -d)
    chmod 755 "$work"
    pids=()
    trap stop_scratch EXIT
}
stop_scratch() {
    local pid pidfile
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pidfile in "$work"/*.pid; do [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true; done
    rm -rf "$work"
}

# `wait_ready ADMIN_PORT`: waits (up to 10 s) until ferry's admin API says it is ready.
wait_ready() {
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/ready" && return; sleep 0.1; done
}

# `register_backend EUREKA_PORT BACKEND_PORT [ID]`: 127.0.0.1:BACKEND_PORT as instance ID
# (default backend-1) of BACKEND, registered through ferry's Eureka API with the default
# lease (30 s renewals, 90 s duration).
register_backend() {
    curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' "http://127.0.0.1:$1/eureka/apps/BACKEND" \
        -d "{\"instance\":{\"instanceId\":\"${3:-backend-1}\",\"hostName\":\"127.0.0.1\",\"app\":\"BACKEND\",\"ipAddr\":\"127.0.0.1\",\"port\":{\"\$\":$2,\"@enabled\":true},\"dataCenterInfo\":{\"name\":\"MyOwn\"}}}"
}

# `start_backend PORT`: the fast backend every proxy benchmark calls, nginx (1 worker, on
# the load core) answering `200 ok` with keep-alive, its pid in $work/backend.pid.
start_backend() {
    cat > "$work/backend.conf" <<CONF
worker_processes 1;
pid $work/backend.pid;
error_log $work/backend-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    server { listen 127.0.0.1:$1; location / { return 200 "ok\n"; } }
}
CONF
    taskset -c $load_core nginx -c "$work/backend.conf" -p "$work"
}

# `answers_ok PORT...`: fails the script unless each 127.0.0.1:PORT answers `ok`.
answers_ok() {
    local target
    for target in "$@"; do
        [ "$(curl -sf "http://127.0.0.1:$target/")" = "ok" ] || { echo "127.0.0.1:$target does not answer ok" >&2; exit 1; }
    done
}

# Jiffies the server core spent busy (user, system, interrupts) and in all, from /proc/stat.
core_jiffies() { awk -v cpu="cpu$server_core" '$1 == cpu {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

# `max_rate PORT` (wrk -t1 -c64 for $seconds s on the load core) prints "req/s
# busy-fraction-of-the-server-core requests". The load generator and the backend share
# core 0, so on a slow machine they, not the server, can set the ceiling; the server core's
# busy fraction tells how much of its one core the path needed for that rate.
max_rate() {
    local output before after
    before=$(core_jiffies)
    output=$(taskset -c $load_core wrk -t1 -c64 -d"${seconds}"s "http://127.0.0.1:$1/")
    after=$(core_jiffies)
    echo "$output" >&2
    if echo "$output" | grep -q "Non-2xx\|Socket errors"; then echo "errors against port $1" >&2; exit 1; fi
    echo "$output" | awk -v b="$before" -v a="$after" '/ requests in / {n = $1} /^Requests\/sec:/ {
        split(b, x, " "); split(a, y, " "); printf "%.0f %.3f %d\n", $2, (y[1] - x[1]) / (y[2] - x[2]), n }'
}

# `fixed PORT`: latency at 1,000 req/s, open loop, for $seconds s over 8 connections.
fixed() { taskset -c $load_core "${CARGO_TARGET_DIR:-target}"/release/ferry-bench-loadgen rate "127.0.0.1:$1" / 1000 "$seconds" 8; }

# `status_kb PID KEY`: a /proc/PID/status figure (VmHWM, RssAnon, ...) in KB.
status_kb() { awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"; }
# `cpu_ticks PID`: the CPU time a process has used (user + system), in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
mb() { python3 -c "print(f'{$1 / 1024:.1f}')"; }
