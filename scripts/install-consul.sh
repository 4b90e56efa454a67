#!/usr/bin/env bash
# Installs a real HashiCorp Consul agent binary at
# ${FERRY_TOOLS:-$HOME/.cache/ferry-tools}/bin/consul and prints its path.
#
# Why: the tests run a real Consul dev agent (`consul agent -dev ...`) as the
# legacy registry Ferry syncs with, so they exercise Consul's actual HTTP API
# rather than a stand-in.
#
# How: Consul is built from source fetched through the Go module proxy,
# because that is the only package registry this machine reaches (no
# releases.hashicorp.com, no Docker Hub, no apt package). It is pinned to
# v1.16.1, the last Consul release under the Mozilla Public License 2.0;
# v1.16.2 and 1.17+ are under the Business Source License. The script
# checks that the LICENSE of every module it builds from says MPL-2.0.
#
# The consul module's go.mod replaces its nested modules (api, sdk, ...) with
# ./api etc., which the module zip does not contain, so `go install` refuses
# it. The source is copied to a writable directory, the replace directives are
# dropped so the nested modules resolve to the versions go.mod requires, and
# their checksums, pinned below, are added to go.sum (the checksum database
# does not know envoyextensions v0.4.1, though the proxy serves it).
#
# Idempotent: exits at once when the installed binary is already v1.16.1.
# A cold run downloads ~290 MB of modules and compiles for ~3.5 minutes on
# 2 cores (a 157 MiB binary); with warm Go caches a rebuild takes ~10 s.
set -euo pipefail

CONSUL_VERSION=1.16.1
TOOLS=${FERRY_TOOLS:-$HOME/.cache/ferry-tools}
BIN=$TOOLS/bin/consul

if [[ -x $BIN ]] && [[ $("$BIN" version 2>/dev/null | head -n1) == "Consul v$CONSUL_VERSION" ]]; then
    echo "$BIN"
    exit 0
fi

GO=$(command -v go || true)
GO=${GO:-/usr/local/go/bin/go}
[[ -x $GO ]] || { echo "install-consul: no Go toolchain (looked on PATH and at /usr/local/go/bin/go)" >&2; exit 1; }

# The module proxy only. GOTOOLCHAIN=local: build with the installed Go, never
# fetch another toolchain.
export GOPROXY=https://proxy.golang.org GOTOOLCHAIN=local CGO_ENABLED=0

# The nested modules consul v1.16.1 requires, with their go.sum lines
# (checked against sum.golang.org where it knows them).
SUBMODULE_SUMS='github.com/hashicorp/consul/api v1.24.0 h1:u2XyStA2j0jnCiVUU7Qyrt8idjRn4ORhK6DlvZ3bWhA=
github.com/hashicorp/consul/api v1.24.0/go.mod h1:NZJGRFYruc/80wYowkPFCp1LbGmJC9L8izrwfyVx/Wg=
github.com/hashicorp/consul/envoyextensions v0.4.1 h1:7s3IXE+qmwjPbZPva+8BjHLrpkFrFkNE+z/6X/O6PQc=
github.com/hashicorp/consul/envoyextensions v0.4.1/go.mod h1:PkLAV99qviACPT7v8Pn7d/vacZixC8/4fuZpR7Rf7vA=
github.com/hashicorp/consul/proto-public v0.4.1 h1:k1RWFQo3uvtaLyC8ZEdP2jJOCiNp/7Tp8zz9MsjAxc8=
github.com/hashicorp/consul/proto-public v0.4.1/go.mod h1:ENwzmloQTUPAYPu7nC1mli3VY0Ny9QNi/FSzJ+KlZD0=
github.com/hashicorp/consul/sdk v0.14.1 h1:ZiwE2bKb+zro68sWzZ1SgHF3kRMBZ94TwOCFRF4ylPs=
github.com/hashicorp/consul/sdk v0.14.1/go.mod h1:vFt03juSzocLRFo59NkeQHHmQa6+g7oU0pfzdI1mUhg=
github.com/hashicorp/consul/troubleshoot v0.3.1 h1:M3sAzWRT3xXseRoa/Z8q8Kf+Ws0J1xN8nLDj0dC2UIw=
github.com/hashicorp/consul/troubleshoot v0.3.1/go.mod h1:QjmTNmf2Umo/mqTjW+EhDAHEG2l15B81CkcxhF4GALU='

# Downloads module@version (verified against go.sum lines in $SUMS when given)
# and prints its directory in the module cache, after checking it is MPL-2.0.
module_dir() {
    local dir
    dir=$("$GO" mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
    [[ -n $dir ]] || { echo "install-consul: could not download $1 from $GOPROXY" >&2; exit 1; }
    grep -q 'Mozilla Public License' "$dir/LICENSE" ||
        { echo "install-consul: $1 is not under the Mozilla Public License; refusing to build it" >&2; exit 1; }
    echo "$dir"
}

SRC=$TOOLS/consul-src/v$CONSUL_VERSION
mkdir -p "$TOOLS/bin" "$TOOLS/consul-src"
cd "$TOOLS/consul-src"

module_src=$(module_dir "github.com/hashicorp/consul@v$CONSUL_VERSION")
rm -rf "$SRC"
cp -R "$module_src" "$SRC"
chmod -R u+w "$SRC"
cd "$SRC"

while read -r path version _; do
    [[ $version == */go.mod ]] && continue
    "$GO" mod edit -dropreplace="$path"
    grep -q "^[[:space:]]$path $version\$" go.mod ||
        { echo "install-consul: consul v$CONSUL_VERSION no longer requires $path $version" >&2; exit 1; }
done <<<"$SUBMODULE_SUMS"
printf '%s\n' "$SUBMODULE_SUMS" >>go.sum
while read -r path version _; do
    [[ $version == */go.mod ]] || module_dir "$path@$version" >/dev/null
done <<<"$SUBMODULE_SUMS"

"$GO" build -trimpath -o "$BIN.tmp" .
mv "$BIN.tmp" "$BIN"
"$BIN" version | head -n1 | grep -qx "Consul v$CONSUL_VERSION" ||
    { echo "install-consul: built $BIN but it does not report v$CONSUL_VERSION" >&2; exit 1; }
echo "$BIN"
