#!/usr/bin/env bash
# Deploy an image of the API with docker compose on this host; roll back if it is not ready.
#
#   deploy/deploy.sh [--login REGISTRY USER] IMAGE
#
# Runs from the stack's folder (docker-compose.yml, monitoring/, deploy/, .env). Records the
# image it deployed in $STATE_DIR/current-image; on a failed health check it restarts the
# previously recorded image and exits 1. Re-running with the image already live and ready
# changes nothing. With --login, the registry password is read from standard input.
#
# Environment: READY_URL (http://127.0.0.1:8000/ready), READY_TIMEOUT_S (300),
#              READY_INTERVAL_S (2), STATE_DIR (.deploy)
set -euo pipefail

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}

login_registry=""
login_user=""
while [ "$#" -gt 0 ]; do
    case "$1" in
        --login)
            [ "$#" -ge 3 ] || { echo "--login needs REGISTRY and USER" >&2; exit 2; }
            login_registry=$2
            login_user=$3
            shift 3
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*)
            echo "unknown option: $1" >&2
            exit 2
            ;;
        *) break ;;
    esac
done
if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    usage >&2
    exit 2
fi
new_image=$1

cd "$(dirname "$0")/.."
ready_url=${READY_URL:-http://127.0.0.1:8000/ready}
ready_timeout=${READY_TIMEOUT_S:-300}
ready_interval=${READY_INTERVAL_S:-2}
state_dir=${STATE_DIR:-.deploy}
mkdir -p "$state_dir"
previous_image=""
if [ -s "$state_dir/current-image" ]; then
    previous_image=$(cat "$state_dir/current-image")
fi

log() { printf '%s deploy: %s\n' "$(date -u +%FT%TZ)" "$*"; }

ready_now() {
    curl -fsS -o /dev/null --max-time 5 "$ready_url"
}

wait_ready() {
    local deadline=$((SECONDS + ready_timeout))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ready_now 2>/dev/null; then
            return 0
        fi
        sleep "$ready_interval"
    done
    return 1
}

start_image() {
    API_IMAGE=$1 docker compose up -d --no-build --remove-orphans
}

log "deploying $new_image (running: ${previous_image:-nothing recorded})"
if [ "$new_image" = "$previous_image" ] && ready_now 2>/dev/null; then
    log "$new_image is already live and ready; nothing to do"
    exit 0
fi

if [ -n "$login_registry" ]; then
    docker login "$login_registry" --username "$login_user" --password-stdin
fi
API_IMAGE=$new_image docker compose pull api
start_image "$new_image"

if wait_ready; then
    printf '%s\n' "$new_image" >"$state_dir/current-image"
    printf '%s\n' "$previous_image" >"$state_dir/previous-image"
    log "$new_image is ready"
    exit 0
fi

log "$new_image was not ready within ${ready_timeout}s" >&2
if [ -n "$previous_image" ]; then
    log "rolling back to $previous_image" >&2
    start_image "$previous_image"
    if wait_ready; then
        log "rolled back: $previous_image is ready again" >&2
    else
        log "rollback started but $previous_image is not ready either" >&2
    fi
else
    log "no previous image recorded; stopping the failed API" >&2
    API_IMAGE=$new_image docker compose stop api
fi
exit 1
