#!/usr/bin/env bash
# Build the service's image: Docker with BuildKit where an engine runs, else podman.
#   deploy/image/build.sh [IMAGE] [--train]
# --train bakes trained models into the image (TRAIN_AT_BUILD=true), as CI images are.
#
# With podman (no Docker engine, as on the CI machine): runc as the runtime and rlimits the
# host allows (a generated containers.conf), `--format docker` (the OCI format drops
# HEALTHCHECK), the host's network and CA bundle for the build's package downloads, and a
# local stand-in for the Python base image when no registry serves it (standin-base.sh,
# said loudly).
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=prediction-service:local
TRAIN=false
for arg in "$@"; do
    case "$arg" in
        --train) TRAIN=true ;;
        -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "build.sh: unknown option $arg" >&2; exit 2 ;;
        *) IMAGE=$arg ;;
    esac
done
BASE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
started=$(date +%s)

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    DOCKER_BUILDKIT=1 docker build --build-arg TRAIN_AT_BUILD="$TRAIN" -t "$IMAGE" .
else
    if ! command -v podman >/dev/null 2>&1; then
        echo "build.sh: neither a Docker engine nor podman is here (apt-get install podman runc)" >&2
        exit 2
    fi
    # Running the image needs the same settings: the path is printed for `podman run`.
    conf=${TMPDIR:-/tmp}/prediction-service-containers.conf
    nofile=$(ulimit -Hn)
    nproc=$(ulimit -Hu)
    [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
    [ "$nofile" = unlimited ] && nofile=1048576
    printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n' \
        "$nofile" "$nofile" "$nproc" "$nproc" > "$conf"
    if command -v runc >/dev/null 2>&1; then
        printf '[engine]\nruntime = "runc"\n' >> "$conf"
    fi
    # CNI with its dnsname plugin (what .ci/run installs): compose's services find each
    # other by name, whichever network stack podman would otherwise pick.
    if [ -x /usr/lib/cni/dnsname ]; then
        printf '[network]\nnetwork_backend = "cni"\n' >> "$conf"
    fi
    export CONTAINERS_CONF="$conf"
    echo "CONTAINERS_CONF=$conf"
    if ! podman image exists "$BASE"; then
        if ! timeout 120 podman pull -q "docker.io/library/$BASE" >/dev/null 2>&1; then
            echo "build.sh: $BASE cannot be pulled here; building a local STAND-IN for it" \
                 "(Debian bookworm and its python3.11; deploy/image/standin-base.sh)" >&2
            deploy/image/standin-base.sh "docker.io/library/$BASE"
        fi
    fi
    podman build --format docker --network host \
        --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
        --build-arg TRAIN_AT_BUILD="$TRAIN" -t "$IMAGE" .
fi
echo "build.sh: built $IMAGE in $(( $(date +%s) - started )) s"
