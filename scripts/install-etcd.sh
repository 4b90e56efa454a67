#!/usr/bin/env bash
# Installs what Ferry's etcd store needs on this machine, from Debian, when missing and run
# as root: `protoc` (protobuf-compiler; etcd-client's build script compiles etcd's .proto
# files with it, so `cargo build`, `cargo clippy` and `cargo test` all need it) and `etcd`
# with `etcdctl` (etcd-server, etcd-client: the many-nodes tests start a real three-member
# cluster with scripts/etcd-cluster.sh). Then checks they are there, saying what to install
# when not. `.ci/run` runs it before its first cargo command, scripts/test.sh before its
# build; it does nothing when all three are present.
#
# Installing etcd-server starts its service on some machines: a policy-rc.d that refuses
# every start keeps it stopped while apt runs (a policy-rc.d already there is put back
# after), and the unit is then disabled, so no system etcd is ever left running; the tests
# start their own members, on their own ports and data.
set -euo pipefail

need() { command -v "$1" >/dev/null || { echo "scripts/install-etcd.sh: $1 is required ($2)" >&2; exit 1; }; }

install() {
    local policy=/usr/sbin/policy-rc.d saved="" status=0
    if [ -e "$policy" ]; then
        saved=$(mktemp)
        cp -p "$policy" "$saved"
    fi
    printf '#!/bin/sh\n# scripts/install-etcd.sh: no service starts while etcd-server is installed\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    { apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client protobuf-compiler >/dev/null; } \
        || status=$?
    if [ -n "$saved" ]; then mv "$saved" "$policy"; else rm -f "$policy"; fi
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl disable --now etcd.service >/dev/null 2>&1 || true
    fi
    return "$status"
}

if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null || ! command -v protoc >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        install
    fi
fi
need protoc "the protobuf compiler, for the etcd client's build (apt: protobuf-compiler)"
need etcd "etcd 3.4 or newer, the many-nodes tests' store (apt: etcd-server)"
need etcdctl "etcd's command-line client (apt: etcd-client)"
