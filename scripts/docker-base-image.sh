#!/usr/bin/env bash
# Makes sure the base image (debian:bookworm-slim by default) exists locally. With a registry it
# is pulled as usual; without one (as on this project's machines) a minimal bookworm is built
# with debootstrap from Debian's package mirror and imported under the same name.
set -euo pipefail
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    exit 0
fi
if timeout 60 docker pull "$BASE_IMAGE" >/dev/null 2>&1; then
    exit 0
fi
echo "==> $BASE_IMAGE cannot be pulled; building it with debootstrap"
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase bookworm "$ROOTFS" http://deb.debian.org/debian >/dev/null
# Slim like the official image: no docs, no apt lists.
rm -rf "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*
tar -C "$ROOTFS" -c . | docker import - "$BASE_IMAGE" >/dev/null
echo "==> imported $BASE_IMAGE"
