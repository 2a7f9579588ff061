#!/bin/sh
# A local stand-in for the Python base image, for machines no registry serves: Debian
# bookworm (debootstrap, minbase) with Debian's python3.11, venv and headers, and the
# /usr/local/bin/python links the official image has; imported into podman as NAME.
#   deploy/image/standin-base.sh NAME
# Its Python is Debian's 3.11.2, not the official image's build: good for checking the
# image, not for shipping it.
set -eu
NAME=${1:?usage: standin-base.sh NAME}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$MIRROR" >/dev/null
# The host's package sources (a mirror it may need), for this and for the image's build.
if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
    cp /etc/apt/sources.list.d/*.sources "$root/etc/apt/sources.list.d/"
    rm -f "$root/etc/apt/sources.list"
fi
chroot "$root" apt-get update -qq
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3.11 python3.11-venv python3.11-dev ca-certificates >/dev/null
chroot "$root" apt-get clean
rm -rf "$root/var/lib/apt/lists/"*
for name in python python3 python3.11; do
    ln -sf /usr/bin/python3.11 "$root/usr/local/bin/$name"
done
tar -C "$root" -c . | podman import --change 'CMD ["python3"]' - "$NAME" >/dev/null
echo "standin-base.sh: $NAME is a local stand-in (Debian's python3.11)" >&2
