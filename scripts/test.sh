#!/usr/bin/env bash
# Runs every test on a fresh machine: installs the real third-party clients the tests use
# (Python ones into .venv, Node ones into tests/node_modules, Java 17, Maven and promtool
# through apt when missing) and etcd with protoc (scripts/install-etcd.sh; the many-nodes tests start a
# real three-member cluster with scripts/etcd-cluster.sh), builds the workspace once and the
# Spring estate under samples/ once (scripts/build-samples.sh, beside the Rust build: it is
# mostly downloads the first time),
# runs the Rust tests, a short run of every fuzz target (scripts/fuzz.sh, a few seconds
# each), then the end-to-end tests against the built `ferry` binary, then the Spring estate
# tests (tests/spring: the real Java apps of both generations against the built binary),
# then a representative few of the end-to-end tests against the release build users run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

need() { command -v "$1" >/dev/null || { echo "scripts/test.sh: $1 is required ($2)" >&2; exit 1; }; }
need cargo "Rust 1.90 or newer"
need python3 "Python 3.10 or newer"
need node "Node.js 20 or newer, with npm (playwright-core needs 20)"
need npm "Node.js's package manager"

echo "== installing the real clients the tests drive"
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
(cd tests && npm ci --no-audit --no-fund --loglevel=error)

if ! command -v java >/dev/null || ! command -v mvn >/dev/null \
        || ! java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])'; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null
    fi
fi
need java "Java 17 or newer (apt: openjdk-17-jdk-headless)"
need mvn "Maven 3.8 or newer (apt: maven)"

if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
    fi
fi

# tcpdump and libfaketime for the sidecar tests (tests/e2e/test_sidecar.py: a capture of the
# link between two hosts, a node whose clock runs ahead), with the namespaces' ip and nft.
if ! command -v tcpdump >/dev/null || ! command -v faketime >/dev/null \
        || ! command -v ip >/dev/null || ! command -v nft >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tcpdump faketime iproute2 nftables >/dev/null
    fi
fi

# Debian's prometheus package for tests/e2e/test_metrics.py: `promtool check metrics` on a
# live scrape, `promtool check rules` on the Grafana dashboard's queries, and a server the
# test starts on its own port. The package would also start one as a service where
# invoke-rc.d may, so a policy that refuses (exit 101) stands for this install unless the
# machine has its own.
if ! command -v promtool >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        own_policy=
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            own_policy=1
        fi
        installed=0
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends prometheus >/dev/null || installed=$?
        if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
        [ "$installed" = 0 ] || { echo "scripts/test.sh: apt-get install prometheus failed" >&2; exit 1; }
    fi
fi

# Chromium for the dashboard test (tests/e2e/test_dashboard.py drives Debian's headless
# Chromium with playwright-core, which downloads no browser of its own).
if [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
fi

# protoc for etcd-client's build, and etcd for the many-nodes tests (Debian's packages; no
# system etcd is left running).
scripts/install-etcd.sh

echo "== building the Spring estate (scripts/build-samples.sh) and a real Consul (scripts/install-consul.sh), in the background"
mkdir -p target
scripts/build-samples.sh >target/samples-build.log 2>&1 &
samples_build=$!
# The legacy Consul the sync tests run; built once from the Go module proxy, then cached.
PATH=$PATH:/usr/local/go/bin scripts/install-consul.sh >target/consul-install.log 2>&1 &
consul_install=$!

echo "== building (once, debug profile; the tests reuse this build)"
cargo build --locked --workspace --all-targets
if ! wait "$samples_build"; then
    cat target/samples-build.log >&2
    echo "scripts/build-samples.sh failed" >&2
    exit 1
fi
rm -f target/samples-build.log
if ! wait "$consul_install"; then
    cat target/consul-install.log >&2
    echo "scripts/install-consul.sh failed" >&2
    exit 1
fi
FERRY_CONSUL_BIN=$(tail -n1 target/consul-install.log)
export FERRY_CONSUL_BIN
rm -f target/consul-install.log

echo "== Rust tests"
cargo test --locked --workspace

echo "== fuzz targets, ${FERRY_FUZZ_SECONDS:-5}s each (scripts/fuzz.sh; bench/fuzz-long.sh for long runs)"
scripts/fuzz.sh "${FERRY_FUZZ_SECONDS:-5}"

echo "== compose files"
if ! command -v docker-compose >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null) \
        || echo "docker-compose could not be installed"
fi
if command -v docker-compose >/dev/null; then
    for file in compose/*.yml; do
        # An invalid file fails the run: `if !` keeps `set -e` from being bypassed.
        if ! docker-compose -f "$file" config --quiet; then
            echo "invalid compose file: $file" >&2
            exit 1
        fi
        echo "valid: $file"
    done
elif [ -n "${CI:-}" ]; then
    echo "docker-compose is required under CI to validate compose/*.yml" >&2
    exit 1
else
    echo "docker-compose is missing: compose files NOT validated (install it, or run as root)"
fi

echo "== end-to-end tests: the real ferry binary with real clients"
FERRY_BIN="$root/target/debug/ferry" .venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e

# The release build (profile-guided: two optimized builds and a training run, about 15
# minutes on 2 cores) runs beside the Spring suite, which mostly waits on its JVMs.
echo "== building what users run (scripts/build-release.sh), in the background"
scripts/build-release.sh >target/release-build.out 2>target/release-build.log &
release_build=$!

echo "== Spring estate tests: the real Java apps (samples/) with the ferry binary"
started=$(date +%s)
FERRY_BIN="$root/target/debug/ferry" .venv/bin/python -m pytest -q -p no:cacheprovider tests/spring
echo "tests/spring took $(( $(date +%s) - started ))s"

echo "== the build users run (scripts/build-release.sh: release, static) with real clients"
if ! wait "$release_build"; then
    cat target/release-build.log >&2
    echo "scripts/build-release.sh failed" >&2
    exit 1
fi
shipped="$root/$(tail -n1 target/release-build.out)"
rm -f target/release-build.out target/release-build.log
FERRY_BIN="$shipped" .venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e \
    -k "py_registration_is_seen_by_js or ttl_and_http_checks or survive_kill_9 or cutover_and_rollback or the_dashboard_shows or git_labels_and_new_commits or registered_on_a_is_found_on_b_and_c"
