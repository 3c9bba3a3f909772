#!/bin/sh
# Entry point of the datadns-girder image.
#   serve [girder serve options]   first-start setup (bootstrap.py), then Girder
#   feder8 run|sync                the site sidecar (configured by FEDER8_* variables)
#   anything else                  run as given
set -eu

if [ "$#" -eq 0 ]; then
    set -- serve
fi

case "$1" in
serve)
    shift
    : "${GIRDER_MONGO_URI:?set GIRDER_MONGO_URI, e.g. mongodb://mongo:27017/girder}"
    # Idempotent: creates the admin, API keys and registrars if missing, applies settings.
    python "$(dirname "$0")/bootstrap.py"
    exec girder serve --mode production --host 0.0.0.0 --port "${GIRDER_PORT:-8080}" \
        --database "$GIRDER_MONGO_URI" "$@"
    ;;
*)
    exec "$@"
    ;;
esac
