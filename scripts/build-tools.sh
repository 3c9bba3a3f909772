#!/usr/bin/env bash
# Build the notebook tools' environments (issue #16; docs/tools.md), without a registry:
#
#   scripts/build-tools.sh [--process] [--docker] [--all] [id ...]
#   scripts/build-tools.sh --missing [id ...]   print those whose process env is not built
#
# ids: python, scientific-python, r (default: all three). Backends: --process (the
# default) builds a Python venv per tool for the process and slurm backends;
# --docker builds an image per tool for the docker backend; --all builds both.
#
# - Process environments: <tools dir>/<id>, a venv of Debian's /usr/bin/python3
#   with JupyterLab from PyPI (pinned below). The tools dir is outside the clone, so
#   every clone on this machine reuses it: $DATADNS_TOOLS_DIR, else
#   /var/lib/datadns/tools for root, else ${XDG_DATA_HOME:-~/.local/share}/datadns/tools
#   (girder_resolver/tools.py says the same). The r tool needs R and IRkernel from
#   Debian (apt-get install r-base-core r-cran-irkernel) and gets the 'ir' kernelspec
#   in its venv's share/jupyter/kernels.
# - Images: localhost/datadns-tool-<id>:latest, Debian bookworm by mmdebstrap, made by
#   scripts/build-notebook-image.sh with more steps: a venv /opt/datadns/venv (seeing
#   nothing of Debian's Python packages) with the same pinned wheels as the process
#   environment, first on PATH; R comes from Debian packages there.
#
# Idempotent and cached: a venv holds the hash of its recipe in .datadns-recipe, an
# image in its label datadns.recipe; a build whose recipe did not change does nothing.
# Environment: DATADNS_TOOLS_DIR, DATADNS_TOOLS_PYTHON (default /usr/bin/python3),
# DATADNS_DEBIAN_MIRROR (for images).
set -euo pipefail
cd "$(dirname "$0")/.."
# What is built is read by other users (the notebooks' sandbox user, slurm jobs).
umask 022

ALL_IDS=(python scientific-python r)
# The pinned PyPI packages, in docker/tools/pins/ (which docker/tools/Dockerfile reads
# too): jupyter.txt, what every tool runs (JupyterLab, the classic UI for a tool whose
# ui is 'notebook', a Python kernel); scientific.txt, the scientific-python tool's
# libraries. The recipe changes with them.
read_pins() {
    local pins
    pins="$(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "docker/tools/pins/$1.txt" | paste -sd ' ')" \
        && [[ -n "$pins" ]] || { echo "build-tools: error: no pins in docker/tools/pins/$1.txt" >&2; exit 1; }
    echo "$pins"
}
JUPYTER_PIP="$(read_pins jupyter)"
SCIENTIFIC_PIP="$(read_pins scientific)"
R_DEB='r-base-core,r-cran-irkernel'
IMAGE_VENV=/opt/datadns/venv
# JupyterLab's settings in every tool: notebooks have no network, so it neither asks to
# fetch Jupyter's news nor checks for updates.
LAB_OVERRIDES='{"@jupyterlab/apputils-extension:notification": {"checkForUpdates": false, "fetchNews": "false"}}'

started=$SECONDS
building=''
trap '[[ -z "$building" ]] || rm -rf "$building"' EXIT
log() { printf 'build-tools: [%4ds] %s\n' "$((SECONDS - started))" "$*"; }
die() { printf 'build-tools: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

process=0
docker=0
missing=0
ids=()
for arg in "$@"; do
    case "$arg" in
        --process) process=1 ;;
        --docker) docker=1 ;;
        --all) process=1; docker=1 ;;
        --missing) missing=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option $arg" ;;
        *)
            [[ " ${ALL_IDS[*]} " == *" $arg "* ]] || die "unknown tool '$arg': choose among ${ALL_IDS[*]}"
            ids+=("$arg") ;;
    esac
done
[[ $process == 0 && $docker == 0 ]] && process=1
[[ ${#ids[@]} == 0 ]] && ids=("${ALL_IDS[@]}")

if [[ -n "${DATADNS_TOOLS_DIR:-}" ]]; then
    TOOLS_DIR="$DATADNS_TOOLS_DIR"
elif [[ "$(id -u)" == 0 ]]; then
    TOOLS_DIR=/var/lib/datadns/tools
else
    TOOLS_DIR="${XDG_DATA_HOME:-$HOME/.local/share}/datadns/tools"
fi
PYTHON="${DATADNS_TOOLS_PYTHON:-/usr/bin/python3}"

if [[ $missing == 1 ]]; then
    unbuilt=()
    for id in "${ids[@]}"; do [[ -f "$TOOLS_DIR/$id/.datadns-recipe" ]] || unbuilt+=("$id"); done
    echo "${unbuilt[*]}"
    exit 0
fi

pip_packages() {
    case "$1" in
        scientific-python) echo "$JUPYTER_PIP $SCIENTIFIC_PIP" ;;
        *) echo "$JUPYTER_PIP" ;;
    esac
}

# What a tool's kernel must import (or run) to count as built.
check_python() {
    case "$1" in
        scientific-python) echo 'import jupyter_server, jupyterlab, ipykernel, numpy, scipy, pandas, matplotlib, xarray, netCDF4, h5py' ;;
        *) echo 'import jupyter_server, jupyterlab, ipykernel' ;;
    esac
}

need_r() {
    command -v R >/dev/null && [[ -f /usr/lib/R/site-library/IRkernel/kernelspec/kernel.json ]] \
        || die "the r tool needs R and IRkernel from Debian: apt-get install r-base-core r-cran-irkernel"
}

# The 'ir' kernelspec in the venv, so that the tool offers it whatever /usr/share/jupyter holds.
install_ir_kernelspec() {
    local kernels="$1/share/jupyter/kernels/ir"
    mkdir -p "$kernels"
    cp /usr/lib/R/site-library/IRkernel/kernelspec/logo-* "$kernels/" 2>/dev/null || true
    cat > "$kernels/kernel.json" <<'JSON'
{"argv": ["/usr/bin/R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],
 "display_name": "R",
 "language": "R"}
JSON
}

build_process() {
    local id="$1" env="$TOOLS_DIR/$1" step
    [[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)" || die "no python3 to make venvs with"
    "$PYTHON" -c 'import ensurepip' 2>/dev/null \
        || die "$PYTHON cannot make venvs: apt-get install python3-venv"
    [[ "$id" == r ]] && need_r
    local recipe
    recipe="$( { "$PYTHON" -c 'import sys; print(sys.version)'; pip_packages "$id"; check_python "$id"
                 [[ "$id" == r ]] && declare -f install_ir_kernelspec; echo "$LAB_OVERRIDES"; } \
               | sha256sum | cut -c1-16)"
    if [[ -f "$env/.datadns-recipe" && "$(cat "$env/.datadns-recipe")" == "$recipe" ]]; then
        log "$id (process): $env is up to date (recipe $recipe)"
        return
    fi
    if [[ -e "$env" ]]; then
        [[ -f "$env/pyvenv.cfg" ]] || die "$env exists and is not a venv; move it away"
        log "$id (process): rebuilding $env (recipe ${recipe}, was $(cat "$env/.datadns-recipe" 2>/dev/null || echo unknown))"
        rm -rf "$env"
    fi
    step=$SECONDS
    log "$id (process): making the venv $env with $PYTHON"
    mkdir -p "$TOOLS_DIR"
    # A failed build leaves nothing that looks ready.
    building="$env"
    "$PYTHON" -m venv "$env"
    log "$id (process): pip install $(pip_packages "$id") ..."
    # shellcheck disable=SC2046
    if ! "$env/bin/pip" install -q --disable-pip-version-check $(pip_packages "$id") \
            >"$env/.pip.log" 2>&1; then
        grep -v '^WARNING: Location' "$env/.pip.log" | tail -20 >&2
        die "$id (process): pip install failed (is PyPI reachable?), its last output is above"
    fi
    log "$id (process): installed in $((SECONDS - step)) s"
    mkdir -p "$env/share/jupyter/lab/settings"
    echo "$LAB_OVERRIDES" > "$env/share/jupyter/lab/settings/overrides.json"
    if [[ "$id" == r ]]; then
        install_ir_kernelspec "$env"
        log "$id (process): the 'ir' kernelspec is in $env/share/jupyter/kernels/ir"
    fi
    "$env/bin/python" -c "$(check_python "$id")" || die "$id (process): the new venv does not import what it should"
    echo "$recipe" > "$env/.datadns-recipe"
    building=''
    log "$id (process): built $env ($(du -sh "$env" | cut -f1)) in $((SECONDS - step)) s"
}

# JupyterLab's wheels for the images, downloaded here (where pip's configuration, proxy
# and certificates are) into <tools dir>/.wheels, so that nothing inside the image build
# needs the network but Debian's mirror. Debian's python3 in the image is the same 3.11
# as /usr/bin/python3 here, so the same wheels fit.
download_wheels() {
    local downloader="$TOOLS_DIR/.downloader" step=$SECONDS
    local pins="$JUPYTER_PIP $SCIENTIFIC_PIP"
    if [[ -f "$WHEELS/.pins" && "$(cat "$WHEELS/.pins")" == "$pins" ]]; then
        return  # downloaded already, for these pins
    fi
    if [[ ! -x "$downloader/bin/pip" ]]; then
        "$PYTHON" -c 'import ensurepip' 2>/dev/null \
            || die "$PYTHON cannot make venvs: apt-get install python3-venv"
        "$PYTHON" -m venv "$downloader"
    fi
    mkdir -p "$WHEELS"
    log "downloading the wheels of $pins into $WHEELS (for the images)"
    # shellcheck disable=SC2086
    if ! "$downloader/bin/pip" download -q --disable-pip-version-check --only-binary=:all: \
            -d "$WHEELS" $pins >"$WHEELS/.pip.log" 2>&1; then
        grep -v '^WARNING: Location' "$WHEELS/.pip.log" | tail -20 >&2
        die "downloading the wheels failed (is PyPI reachable?), its last output is above"
    fi
    echo "$pins" > "$WHEELS/.pins"
    log "wheels ready in $((SECONDS - step)) s"
}

build_image() {
    local id="$1" step=$SECONDS deb='python3-venv,ca-certificates'
    case "$id" in
        r) deb="$deb,$R_DEB" ;;
    esac
    # Hooks run with this script's environment: $DATADNS_TOOL_WHEELS is the wheels' directory.
    local hooks="chroot \"\$1\" python3 -m venv $IMAGE_VENV
mkdir \"\$1/tmp/wheels\" && cp \"\$DATADNS_TOOL_WHEELS\"/*.whl \"\$1/tmp/wheels/\"
chroot \"\$1\" env -i PATH=/usr/bin:/bin $IMAGE_VENV/bin/pip install -q --no-index --find-links /tmp/wheels --disable-pip-version-check $(pip_packages "$id")
rm -rf \"\$1/tmp/wheels\" \"\$1/root/.cache\"
mkdir -p \"\$1$IMAGE_VENV/share/jupyter/lab/settings\" && echo '$LAB_OVERRIDES' > \"\$1$IMAGE_VENV/share/jupyter/lab/settings/overrides.json\"
chroot \"\$1\" $IMAGE_VENV/bin/python -c \"$(check_python "$id")\""
    [[ "$id" == r ]] && hooks="$hooks
chroot \"\$1\" R --slave -e 'library(IRkernel)'"
    local changes="ENV PATH=$IMAGE_VENV/bin:/usr/local/bin:/usr/bin:/bin"
    log "$id (docker): building localhost/datadns-tool-$id:latest (Debian: $deb)"
    DATADNS_TOOL_WHEELS="$WHEELS" \
    DATADNS_NOTEBOOK_IMAGE="localhost/datadns-tool-$id:latest" \
    DATADNS_NOTEBOOK_PACKAGES="$deb" \
    DATADNS_IMAGE_HOOKS="$hooks" \
    DATADNS_IMAGE_CHANGES="$changes" \
    DATADNS_IMAGE_WHAT="tool image '$id'" \
        scripts/build-notebook-image.sh 2>&1 | sed -u "s/^/    [$id] /" \
        || die "$id (docker): the image build failed (output above)"
    log "$id (docker): done in $((SECONDS - step)) s"
}

if [[ $process == 1 ]]; then
    mkdir -p "$TOOLS_DIR"
    # One build at a time per tools dir (another clone may be building too).
    exec 9>"$TOOLS_DIR/.lock"
    flock 9
    for id in "${ids[@]}"; do build_process "$id"; done
fi
if [[ $docker == 1 ]]; then
    command -v podman >/dev/null || die "--docker needs podman and mmdebstrap (apt-get install podman mmdebstrap)"
    WHEELS="$TOOLS_DIR/.wheels"
    mkdir -p "$TOOLS_DIR"
    # Its own lock: a process build may run beside it (setup.sh --test runs both at once).
    exec 8>"$TOOLS_DIR/.lock-images"
    flock 8
    download_wheels
    # The images at once: each build mostly waits on downloads and dpkg, and a fresh
    # machine (CI) builds all three. A failed one fails the whole command.
    builds=()
    for id in "${ids[@]}"; do build_image "$id" & builds+=("$!"); done
    failed=0
    for pid in "${builds[@]}"; do wait "$pid" || failed=1; done
    [[ $failed == 0 ]] || die "an image build failed (its output is above, prefixed by its tool id)"
fi
log "done"
