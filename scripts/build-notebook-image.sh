#!/usr/bin/env bash
# Build the notebook image for the `docker` launcher backend without a registry:
# a Debian bookworm root filesystem made by mmdebstrap (packages come from the
# Debian archive) and imported into Podman. Idempotent: an existing image built
# from the same package list is kept; one built from another list is rebuilt (the
# list is recorded in the image's label datadns.packages).
#
#   scripts/build-notebook-image.sh
#
# Environment: DATADNS_NOTEBOOK_IMAGE (default localhost/datadns-notebook:latest),
# DATADNS_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# DATADNS_NOTEBOOK_PACKAGES (comma-separated Debian packages to include, default
# python3-jupyter-server,python3-nbclassic,python3-ipykernel,ca-certificates:
# jupyter_server, the classic notebook UI served at /tree as a jupyter_server
# extension, and a Python kernel).
# Sites with a registry or Docker Engine can build docker/notebook/Dockerfile instead.
set -euo pipefail

IMAGE="${DATADNS_NOTEBOOK_IMAGE:-localhost/datadns-notebook:latest}"
MIRROR="${DATADNS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="${DATADNS_NOTEBOOK_PACKAGES:-python3-jupyter-server,python3-nbclassic,python3-ipykernel,ca-certificates}"

log() { echo "build-notebook-image: $*"; }

if podman image exists "$IMAGE"; then
  built_with="$(podman image inspect --format '{{index .Labels "datadns.packages"}}' "$IMAGE" 2>/dev/null || true)"
  if [[ "$built_with" == "$PACKAGES" ]]; then
    log "$IMAGE already exists with packages $PACKAGES; nothing to do"
    exit 0
  fi
  log "$IMAGE was built with packages '${built_with:-unknown}'; rebuilding with $PACKAGES"
fi
command -v mmdebstrap >/dev/null || { log "mmdebstrap is missing (apt-get install mmdebstrap)"; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
started=$SECONDS

log "bootstrapping Debian bookworm with $PACKAGES into $tmp/nb.tar"
# The hook adds the jovyan user (uid 1000, as in Jupyter's images) whose home is
# the notebook's working directory; the dataset is mounted beneath it. The
# apt lists and caches are dropped to keep the image small.
# stdin is /dev/null: mmdebstrap otherwise may read a sources list from it.
mmdebstrap --variant=apt --include="$PACKAGES" \
  --customize-hook='chroot "$1" useradd --create-home --uid 1000 --shell /bin/bash jovyan' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm "$tmp/nb.tar" "$MIRROR" </dev/null
log "root filesystem is $(du -h "$tmp/nb.tar" | cut -f1) after $((SECONDS - started)) s"

log "importing it as $IMAGE"
# The launcher passes its own command; CMD is only a sensible default for
# running the image by hand. It runs as root so that it can read datasets
# whatever their owner; the mount is read-only all the same. (`podman import`
# takes one variable per ENV change: a second NAME=value would join the first's value.)
podman import \
  --change 'WORKDIR /home/jovyan' \
  --change 'ENV HOME=/home/jovyan' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PYTHONUNBUFFERED=1' \
  --change 'EXPOSE 8888' \
  --change "LABEL datadns.packages=$PACKAGES" \
  --change 'CMD ["python3", "-m", "jupyter_server", "--ip=0.0.0.0", "--port=8888", "--allow-root", "--no-browser", "--ServerApp.root_dir=/home/jovyan"]' \
  --message "datadns notebook image (mmdebstrap bookworm + $PACKAGES)" \
  "$tmp/nb.tar" "$IMAGE" >/dev/null
log "built $IMAGE in $((SECONDS - started)) s"
