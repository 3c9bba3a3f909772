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
    step "Building the notebook image (first time only)"
    scripts/build-notebook-image.sh
    step "Starting a one-node Slurm cluster"
    scripts/slurm.sh start
fi
