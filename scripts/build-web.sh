#!/usr/bin/env bash
# Build the plugin's web client into girder_resolver/web_client_dist when its
# sources changed since the last build.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f web_client/package.json ] || { echo "web_client/package.json missing: nothing to build"; exit 0; }
cd web_client
out=../girder_resolver/web_client_dist/girder-plugin-resolver.umd.cjs
newest=$(find src package.json vite.config.* -newer "$out" 2>/dev/null | head -1 || true)
if [ -f "$out" ] && [ -z "$newest" ]; then
    exit 0
fi
printf '\033[1m==> %s\033[0m\n' "Building the web client"
if [ ! -d node_modules ]; then
    if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
fi
npm run build --silent
