# Sourced by `make test`: point the tests at Podman's Docker API and Debian's Chromium.
export DOCKER_HOST=${DOCKER_HOST:-unix://${DATADNS_PODMAN_SOCK:-/run/datadns/podman.sock}}
export DATADNS_CHROMIUM=${DATADNS_CHROMIUM:-/usr/bin/chromium}
