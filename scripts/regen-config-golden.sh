#!/usr/bin/env bash
# Regenerates the Config Server crate's golden files (registry-adapters/config-server/src/
# golden/) from the real Spring Cloud Config Server (samples/boot3/config-server, native
# backend) serving samples/config-repo, so the goldens say what the reference answers and not
# what Ferry happens to answer. The requests are the GOLDEN table of the crate's src/tests.rs
# (read from there, not repeated here); the repository's absolute path becomes `<repo>` as the
# crate's test writes it. Afterwards `git diff registry-adapters/config-server/src/golden`
# shows where Ferry and the real server differ.
#
#   scripts/regen-config-golden.sh [OUTPUT_DIR]    (default: the crate's golden folder)
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-registry-adapters/config-server/src/golden}
mkdir -p "$out"
scripts/build-samples.sh >/dev/null
repo=$(cd samples/config-repo && pwd -P)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp -t config-server-XXXXXX.log)

java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx256m -Dspring.jmx.enabled=false \
    -Dserver.address=127.0.0.1 -Dserver.port="$port" -Dspring.profiles.active=native \
    -Dspring.cloud.config.server.native.search-locations="file:$repo/" \
    -jar samples/boot3/config-server/target/config-server.jar >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -f "$log"' EXIT

for _ in $(seq 1 240); do
    if curl -fs "http://127.0.0.1:$port/actuator/health" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server" 2>/dev/null; then cat "$log" >&2; exit 1; fi
    sleep 0.5
done

python3 - "$port" "$repo" "$out" registry-adapters/config-server/src/tests.rs <<'EOF'
import json, re, sys, urllib.request
port, repo, out, tests = sys.argv[1:]
table = open(tests).read().split("const GOLDEN", 1)[1].split("];", 1)[0]
for uri, file in re.findall(r'\(\s*"(/[^"]+)",\s*"([^"]+)",?\s*\)', table):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{uri}") as answer:
        body = answer.read().decode()
    body = body.replace(f"file:{repo}", "file:<repo>").replace(repo, "<repo>")
    if file.endswith(".json"):
        body = json.dumps(json.loads(body), indent=2, ensure_ascii=False) + "\n"
    with open(f"{out}/{file}", "w") as golden:
        golden.write(body)
    print(f"{uri} -> {out}/{file}")
EOF
