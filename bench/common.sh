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
