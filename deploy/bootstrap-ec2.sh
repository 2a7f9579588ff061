#!/usr/bin/env bash
# Prepare a fresh Ubuntu EC2 host for the prediction service. Run once, as root:
#
#   sudo deploy/bootstrap-ec2.sh [--dry-run] [--user deploy] PUBLIC_KEY_FILE
#
# Installs Docker and the compose plugin, creates the deploy user (in the docker group, with
# PUBLIC_KEY_FILE as its authorized key), opens SSH and the service ports in ufw
# (8000 API, 3000 Grafana, 9090 Prometheus), and creates ~deploy/prediction-service with a
# .env to fill in. Safe to re-run. --dry-run prints the commands instead of running them.
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

dry_run=false
user=deploy
while [ "$#" -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=true; shift ;;
        --user) user=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "unknown option: $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [ "$#" -ne 1 ]; then
    usage >&2
    exit 2
fi
key_file=$1
if [ ! -s "$key_file" ]; then
    echo "public key file $key_file is missing or empty" >&2
    exit 2
fi

run() {
    if "$dry_run"; then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}

if ! "$dry_run" && [ "$(id -u)" -ne 0 ]; then
    echo "run as root (sudo)" >&2
    exit 1
fi

home=/home/$user
stack=$home/prediction-service

run apt-get update
run apt-get install -y --no-install-recommends docker.io docker-compose-v2 ufw curl
run systemctl enable --now docker
if ! id "$user" >/dev/null 2>&1; then
    run useradd --create-home --shell /bin/bash "$user"
fi
run usermod -aG docker "$user"
run install -d -m 700 -o "$user" -g "$user" "$home/.ssh"
run install -m 600 -o "$user" -g "$user" "$key_file" "$home/.ssh/authorized_keys"
run install -d -m 750 -o "$user" -g "$user" "$stack"
if [ ! -e "$stack/.env" ]; then
    run install -m 600 -o "$user" -g "$user" /dev/null "$stack/.env"
    echo "fill in $stack/.env: GRAFANA_ADMIN_PASSWORD and PREDICT_ADMIN_TOKEN (see .env.example)"
fi
run ufw allow OpenSSH
for port in 8000 3000 9090; do
    run ufw allow "$port/tcp"
done
run ufw --force enable
echo "host ready: deploy as $user over SSH into $stack"
