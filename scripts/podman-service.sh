#!/usr/bin/env bash
# Run Podman's Docker-compatible API service, so the `docker` launcher backend
# (and its tests) have a Docker Engine API on machines without Docker Engine.
#
#   scripts/podman-service.sh start    # idempotent; prints the DOCKER_HOST to export
#   scripts/podman-service.sh status   # exit 0 when the socket answers, 3 when not
#   scripts/podman-service.sh stop     # idempotent
#
#   eval "$(scripts/podman-service.sh start)"   # start and export DOCKER_HOST in one go
#
# Environment: DATADNS_PODMAN_SOCK (socket path, default /run/datadns/podman.sock).
# Progress goes to stderr so that stdout carries only the export line.
set -euo pipefail

SOCK="${DATADNS_PODMAN_SOCK:-/run/datadns/podman.sock}"
RUN_DIR="$(dirname "$SOCK")"
PID_FILE="$RUN_DIR/podman-service.pid"
LOG_FILE="$RUN_DIR/podman-service.log"
CONF="${DATADNS_CONTAINERS_CONF:-/etc/containers/containers.conf}"

log() { echo "podman-service: $*" >&2; }

# Set `key = value` inside `[section]` of a TOML file, keeping everything else:
# replaces an existing (uncommented) key, including a multi-line array value,
# inserts it at the end of an existing section, or appends the section.
ensure_toml_key() {
  local file="$1" section="$2" key="$3" value="$4" tmp
  tmp="$(mktemp "$file.XXXXXX")"
  awk -v section="$section" -v key="$key" -v value="$value" '
    function header_name(line) {
      sub(/^[[:space:]]*\[/, "", line); sub(/\][[:space:]]*(#.*)?$/, "", line)
      gsub(/[[:space:]]/, "", line); return line
    }
    BEGIN { insec = 0; done = 0; skipping = 0 }
    skipping { if ($0 ~ /\]/) skipping = 0; next }
    /^[[:space:]]*\[/ {
      if (insec && !done) { print key " = " value; done = 1 }
      insec = (header_name($0) == section)
      print; next
    }
    insec && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      rest = $0; sub(/^[^=]*=[[:space:]]*/, "", rest)
      # A multi-line array: drop its continuation lines too.
      if (rest ~ /^\[/ && rest !~ /\]/) skipping = 1
      # A second definition of the key in the section is dropped.
      if (!done) print key " = " value
      done = 1; next
    }
    { print }
    END {
      if (insec && !done) { print key " = " value; done = 1 }
      if (!done) { print ""; print "[" section "]"; print key " = " value }
    }
  ' "$file" >"$tmp"
  if cmp -s "$file" "$tmp"; then
    rm -f "$tmp"
  else
    chmod 644 "$tmp"
    mv "$tmp" "$file"
    log "set [$section] $key = $value in $file"
  fi
}

ensure_containers_conf() {
  mkdir -p "$(dirname "$CONF")"
  [[ -f "$CONF" ]] || : >"$CONF"
  # On these machines crun and the default ulimits both fail inside the sandbox.
  ensure_toml_key "$CONF" containers default_ulimits '[]'
  ensure_toml_key "$CONF" engine runtime '"runc"'
}

answers() {
  curl -fsS --max-time 2 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1
}

service_pid() {
  local pid
  [[ -f "$PID_FILE" ]] || return 1
  pid="$(cat "$PID_FILE")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
  command -v podman >/dev/null || { log "podman is not installed (apt-get install podman runc)"; exit 1; }
  ensure_containers_conf
  if answers; then
    log "already answering on $SOCK"
  else
    mkdir -p "$RUN_DIR"
    if pid="$(service_pid)"; then
      log "pid $pid exists but the socket does not answer yet; waiting for it"
    else
      rm -f "$SOCK"
      # setsid: the service must outlive this shell and the session that ran it. From /:
      # its containers' conmon inherits its working directory, and a checkout it was
      # started in may be deleted while it runs ("Failed to get working directory").
      (cd / && exec setsid podman system service --time=0 "unix://$SOCK" </dev/null >>"$LOG_FILE" 2>&1) &
      echo $! >"$PID_FILE"
      log "started podman system service (pid $!, log $LOG_FILE)"
    fi
    for _ in $(seq 1 100); do
      answers && break
      if ! service_pid >/dev/null; then
        log "the service exited; last lines of $LOG_FILE:"
        tail -n 20 "$LOG_FILE" >&2 || true
        exit 1
      fi
      sleep 0.1
    done
    answers || { log "no answer on $SOCK after 10 s; see $LOG_FILE"; exit 1; }
    log "answering on $SOCK"
  fi
  echo "export DOCKER_HOST=unix://$SOCK"
}

stop() {
  local pid
  if pid="$(service_pid)"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped pid $pid"
  else
    log "not running (no live pid in $PID_FILE)"
  fi
  rm -f "$PID_FILE" "$SOCK"
}

status() {
  if answers; then
    log "answering on $SOCK (pid $(service_pid || echo 'not ours'))"
    echo "export DOCKER_HOST=unix://$SOCK"
  else
    log "not answering on $SOCK"
    exit 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
