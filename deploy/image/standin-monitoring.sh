#!/bin/sh
# Local stand-ins for the compose file's Prometheus and Alertmanager images, for machines no
# registry serves: Debian bookworm's `prometheus` and `prometheus-alertmanager` packages over
# BASE (an image with Debian bookworm and apt: the Python base or its stand-in), tagged with
# the names docker-compose.yml gives, so the file runs unchanged. Each runs as `nobody` with
# its data folder, entrypoint and wget (the compose healthchecks') as the real image has.
#   deploy/image/standin-monitoring.sh BASE PROMETHEUS_IMAGE ALERTMANAGER_IMAGE
# Debian's versions (Prometheus 2.42, Alertmanager 0.25) are older than the real images':
# good for checking the stack's wiring, not for shipping it.
set -eu
BASE=${1:?usage: standin-monitoring.sh BASE PROMETHEUS_IMAGE ALERTMANAGER_IMAGE}
PROMETHEUS=${2:?usage: standin-monitoring.sh BASE PROMETHEUS_IMAGE ALERTMANAGER_IMAGE}
ALERTMANAGER=${3:?usage: standin-monitoring.sh BASE PROMETHEUS_IMAGE ALERTMANAGER_IMAGE}
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

standin() {  # NAME PACKAGE BINARY DATA PORT
    cat > "$context/Containerfile" <<EOF
FROM $BASE
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $2 wget \\
    && rm -rf /var/lib/apt/lists/* \\
    && mkdir -p $4 && chown nobody:nogroup $4
USER nobody
WORKDIR $4
EXPOSE $5
ENTRYPOINT ["$3"]
EOF
    podman build --format docker --network host -q \
        --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
        -t "$1" "$context" >/dev/null
    echo "standin-monitoring.sh: $1 is a local STAND-IN (Debian's $2)" >&2
}

standin "$PROMETHEUS" prometheus /usr/bin/prometheus /prometheus 9090
standin "$ALERTMANAGER" prometheus-alertmanager /usr/bin/prometheus-alertmanager /alertmanager 9093
