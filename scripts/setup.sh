#!/usr/bin/env bash
# Install what Data DNS needs on a fresh Debian machine. Idempotent and quiet when
# everything is already there.
#   scripts/setup.sh          what `make run` needs: Python deps, the web client
#   scripts/setup.sh --test   also what the tests need: Podman's Docker API,
#                             the notebook image, Chromium, Redis, a one-node Slurm
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TEST=0
[ "${1:-}" = "--test" ] && TEST=1

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
have npm || need_apt+=(npm)
# Debian's python3 creates venvs only with python3-venv (ensurepip) installed.
[ -x "$VENV/bin/python" ] || python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# The process backend sandboxes each notebook server with bubblewrap.
have bwrap || need_apt+=(bubblewrap)
# The tools' environments (scripts/build-tools.sh) are venvs of Debian's python3.
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ "$TEST" = 1 ]; then
    have podman || need_apt+=(podman)
    have runc || need_apt+=(runc)
    have mmdebstrap || need_apt+=(mmdebstrap)
    have chromium || need_apt+=(chromium)
    have newuidmap || need_apt+=(uidmap)
    have redis-server || need_apt+=(redis-server)
    have docker-compose || need_apt+=(docker-compose)
    # The slurm backend's tests run a one-node Slurm cluster (scripts/slurm.sh).
    have slurmctld || need_apt+=(slurm-wlm)
    have munged || need_apt+=(munge)
    # The r tool: R and its Jupyter kernel from Debian (scripts/build-tools.sh).
    have R || need_apt+=(r-base-core)
    [ -d /usr/lib/R/site-library/IRkernel ] || need_apt+=(r-cran-irkernel)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "Missing system packages: ${need_apt[*]}; install them (as root: apt-get install ${need_apt[*]})" >&2
        exit 1
    fi
    step "Installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    step "Creating the Python environment in $VENV"
    python3 -m venv "$VENV"
fi
stamp="$VENV/.datadns-installed"
extras=""
[ "$TEST" = 1 ] && extras="[test]"
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || ! grep -qx "extras=$extras" "$stamp"; then
    step "Installing Python packages (pip install -e .$extras)"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".$extras" 2>&1 \
        | grep -v '^WARNING: Location' || true
    # The plugin and the embedded database `make run` starts: both are install_requires.
    "$VENV/bin/python" -c 'import girder_resolver, secantus'
    echo "extras=$extras" > "$stamp"
fi

if have npm; then
    scripts/build-web.sh
    # The front door: configurable-http-proxy, pinned by frontdoor/package-lock.json,
    # installed into frontdoor/node_modules (nothing is fetched at run time).
    chp=frontdoor/node_modules/.bin/configurable-http-proxy
    if [ ! -x "$chp" ] || [ frontdoor/package-lock.json -nt "$chp" ]; then
        step "Installing the front door (configurable-http-proxy)"
        (cd frontdoor && npm ci --no-audit --no-fund --loglevel=error)
        touch "$chp"
    fi
else
    echo "npm not found: the web client is not built; the API works without it" >&2
fi

if [ "$TEST" = 1 ]; then
    step "Starting Podman's Docker-compatible service"
    scripts/podman-service.sh start >/dev/null
    step "Building the notebook image (first time only; beside the steps below)"
    scripts/build-notebook-image.sh 2>&1 | sed -u 's/^/    [notebook image] /' &
    notebook_image=$!
    if [ "$(id -u)" = 0 ]; then
        step "Starting a one-node Slurm cluster"
        scripts/slurm.sh start
    else
        echo "Not root: Slurm not started (the slurm tests need: sudo scripts/slurm.sh start)" >&2
    fi
fi

# The notebook tools (docs/tools.md). `make run` builds the default one, python, for the
# process backend; `make test` builds all three for the process and docker backends.
# Each is cached between runs (outside the clone, see scripts/build-tools.sh).
if [ "$TEST" = 1 ]; then
    step "Building the notebook tools (python, scientific-python, r; cached)"
    # The images and the process environments at once: both mostly wait on downloads.
    scripts/build-tools.sh --docker &
    images=$!
    scripts/build-tools.sh || { wait "$images" "$notebook_image"; exit 1; }
    wait "$images"
    wait "$notebook_image" || { echo "The notebook image did not build (its output is above)" >&2; exit 1; }
else
    # The heading only when it is not built yet; build-tools.sh itself rebuilds a
    # stale one and says so, and says "up to date" otherwise.
    if [ -n "$(scripts/build-tools.sh --missing python)" ]; then
        step "Building the default notebook tool (python)"
    fi
    scripts/build-tools.sh python
    missing="$(scripts/build-tools.sh --missing scientific-python r)"
    if [ -n "$missing" ]; then
        echo "Tools not built, shown as not ready: $missing. Add them with: scripts/build-tools.sh" \
            "$missing (the r tool needs apt-get install r-base-core r-cran-irkernel first)"
    fi
fi
