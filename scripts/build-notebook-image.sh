#!/usr/bin/env bash
# Build the notebook image for the `docker` launcher backend without a registry:
# a Debian bookworm root filesystem made by mmdebstrap (packages come from the
# Debian archive) and imported into Podman. Idempotent: an existing image built
# from the same package list and the same recipe is kept; any other is rebuilt
# (both are recorded in the image's labels datadns.packages and datadns.recipe).
#
#   scripts/build-notebook-image.sh
#
# Environment: DATADNS_NOTEBOOK_IMAGE (default localhost/datadns-notebook:latest),
# DATADNS_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# DATADNS_NOTEBOOK_PACKAGES (comma-separated Debian packages to include, default
# python3-jupyter-server,python3-nbclassic,python3-ipykernel,ca-certificates:
# jupyter_server, the classic notebook UI served at /tree as a jupyter_server
# extension, and a Python kernel).
# Other images are built by the same recipe with more steps (scripts/build-tools.sh
# builds the tools' images so): DATADNS_IMAGE_HOOKS, further mmdebstrap customize
# hooks, one a line (run after the jovyan user is made and before the setuid bits
# and apt lists are dropped; "$1" is the root filesystem), DATADNS_IMAGE_CHANGES,
# further `podman import --change` lines, one a line, and DATADNS_IMAGE_WHAT, what
# the image is (for messages). Both lists count in the recipe.
# Sites with a registry or Docker Engine can build docker/notebook/Dockerfile instead.
set -euo pipefail

IMAGE="${DATADNS_NOTEBOOK_IMAGE:-localhost/datadns-notebook:latest}"
MIRROR="${DATADNS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="${DATADNS_NOTEBOOK_PACKAGES:-python3-jupyter-server,python3-nbclassic,python3-ipykernel,ca-certificates}"

WHAT="${DATADNS_IMAGE_WHAT:-notebook image}"
EXTRA_HOOKS=()
EXTRA_CHANGES=()
[[ -n "${DATADNS_IMAGE_HOOKS:-}" ]] && mapfile -t EXTRA_HOOKS <<<"$DATADNS_IMAGE_HOOKS"
[[ -n "${DATADNS_IMAGE_CHANGES:-}" ]] && mapfile -t EXTRA_CHANGES <<<"$DATADNS_IMAGE_CHANGES"

log() { echo "build-notebook-image: $*"; }

# The recipe, beside the package list: changing either rebuilds the image.
# - jovyan (uid 1000, as in Jupyter's images) is the user the launcher runs
#   notebooks as. Its home is not created: the launcher mounts a fresh tmpfs
#   there (the scratch home), which an empty mount point lets it own.
# - No file keeps a setuid or setgid bit (su, passwd, chfn, ...): notebooks run
#   with no-new-privileges anyway; this removes the tools too.
# - The apt lists and caches are dropped to keep the image small.
HOOKS=(
  'chroot "$1" useradd --no-create-home --home-dir /home/jovyan --uid 1000 --user-group --shell /bin/bash jovyan'
  ${EXTRA_HOOKS[@]+"${EXTRA_HOOKS[@]}"}
  'find "$1" -xdev -type f -perm /6000 -exec chmod ug-s {} +'
  'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
)
# The launcher passes its own command and user; CMD is only a sensible default for
# running the image by hand. (`podman import` takes one variable per ENV change: a
# second NAME=value would join the first's value.)
CHANGES=(
  'WORKDIR /'
  'ENV HOME=/home/jovyan'
  'ENV LANG=C.UTF-8'
  'ENV PYTHONUNBUFFERED=1'
  'CMD ["python3", "-m", "jupyter_server", "--ip=0.0.0.0", "--port=8888", "--allow-root", "--no-browser", "--ServerApp.root_dir=/tmp"]'
  ${EXTRA_CHANGES[@]+"${EXTRA_CHANGES[@]}"}
)
RECIPE="$(printf '%s\n' "$PACKAGES" "${HOOKS[@]}" "${CHANGES[@]}" | sha256sum | cut -c1-16)"

label() {
  podman image inspect --format "{{index .Labels \"$1\"}}" "$IMAGE" 2>/dev/null || true
}

if podman image exists "$IMAGE"; then
  built_with="$(label datadns.packages)"
  built_recipe="$(label datadns.recipe)"
  if [[ "$built_with" == "$PACKAGES" && "$built_recipe" == "$RECIPE" ]]; then
    log "$IMAGE already exists with packages $PACKAGES and recipe $RECIPE; nothing to do"
    exit 0
  fi
  log "$IMAGE was built with packages '${built_with:-unknown}', recipe '${built_recipe:-unknown}'; rebuilding with $PACKAGES, recipe $RECIPE"
  old_id="$(podman image inspect --format '{{.Id}}' "$IMAGE")"
fi
command -v mmdebstrap >/dev/null || { log "mmdebstrap is missing (apt-get install mmdebstrap)"; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
started=$SECONDS

log "bootstrapping Debian bookworm with $PACKAGES into $tmp/nb.tar"
hook_args=()
for hook in "${HOOKS[@]}"; do hook_args+=(--customize-hook="$hook"); done
# stdin is /dev/null: mmdebstrap otherwise may read a sources list from it.
mmdebstrap --variant=apt --include="$PACKAGES" "${hook_args[@]}" \
  bookworm "$tmp/nb.tar" "$MIRROR" </dev/null
log "root filesystem is $(du -h "$tmp/nb.tar" | cut -f1) after $((SECONDS - started)) s"

log "importing it as $IMAGE"
change_args=()
for change in "${CHANGES[@]}"; do change_args+=(--change "$change"); done
podman import "${change_args[@]}" \
  --change "LABEL datadns.packages=$PACKAGES" \
  --change "LABEL datadns.recipe=$RECIPE" \
  --message "datadns $WHAT (mmdebstrap bookworm + $PACKAGES, recipe $RECIPE)" \
  "$tmp/nb.tar" "$IMAGE" >/dev/null
log "built $IMAGE in $((SECONDS - started)) s"
if [[ -n "${old_id:-}" ]]; then
  # The image it replaces, unless a container still uses it (then it stays, untagged).
  podman rmi "$old_id" >/dev/null 2>&1 && log "removed the image it replaces (${old_id:0:12})" || true
fi
