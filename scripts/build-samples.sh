#!/usr/bin/env bash
# Builds the Spring estate under samples/ (both generations) with one Maven command and
# prints the path of every app jar, one a line, relative to the repository root.
# Skips Maven when every jar is newer than every source file and pom. The local repository
# is Maven's default (~/.m2/repository), so dependencies are downloaded once per machine.
# Maven's own output goes to stderr, so `jars=$(scripts/build-samples.sh)` works.
set -euo pipefail
cd "$(dirname "$0")/.."

# The jars the build makes: <generation>/<app>/target/<app>.jar.
jars=(
    samples/boot3/orders/target/orders.jar
    samples/boot3/checkout/target/checkout.jar
    samples/boot3/inventory/target/inventory.jar
    samples/boot3/pricing/target/pricing.jar
    samples/boot3/eureka-server/target/eureka-server.jar
    samples/boot3/config-server/target/config-server.jar
    samples/boot2/orders/target/orders.jar
    samples/boot2/checkout/target/checkout.jar
    samples/boot2/eureka-server/target/eureka-server.jar
)

up_to_date() {
    local oldest="" jar
    for jar in "${jars[@]}"; do
        [ -f "$jar" ] || return 1
        if [ -z "$oldest" ] || [ "$jar" -ot "$oldest" ]; then oldest=$jar; fi
    done
    # Any pom or source newer than the oldest jar means a rebuild.
    [ -z "$(find samples -path '*/target' -prune -o \
        \( -name pom.xml -o -path '*/src/*' \) -type f -newer "$oldest" -print -quit)" ]
}

if up_to_date && [ "${FORCE_SAMPLES_BUILD:-}" = "" ]; then
    echo "build-samples: jars are up to date" >&2
else
    # -T 2: the two generations' modules build side by side on 2 cores.
    mvn -B -q -T 2 -Dstyle.color=never -DskipTests -f samples/pom.xml package >&2
    # Maven leaves a jar alone when its classes did not change (a pom edit that changes
    # nothing built): mark them as built now so the next run skips.
    touch "${jars[@]}"
fi
printf '%s\n' "${jars[@]}"
