#!/bin/sh
# Entry point of the zot stand-in image, installed as /usr/bin/zot.
#
# It takes zot's command line (`zot serve CONFIG`, `zot verify CONFIG`,
# `zot --version`), translates zot's config into one for Docker's distribution
# registry 2.8 (Debian's docker-registry), which serves the same OCI
# distribution API, and runs that registry in its place.
#
# NOTE: distribution serves none of zot's own endpoints: /livez, /readyz,
# /startupz, /metrics, /v2/_zot/ext/... and the UI return 404. /v2/ with
# htpasswd auth works on both. Repository access policies are not enforced.
set -eu

VERSION_FILE=/etc/zot-standin/version
REGISTRY=/usr/bin/registry
TRANSLATE=/usr/lib/zot-standin/zot-to-distribution.jq
RUN_DIR=/tmp/zot-standin
GENERATED=$RUN_DIR/registry.json

standin_version() {
    cat "$VERSION_FILE"
}

fail() {
    printf '{"level":"error","msg":"zot stand-in: %s"}\n' "$1" >&2
    exit 1
}

# Print JSON log line $1 to stdout and append it to zot's log.output file.
log_line() {
    printf '%s\n' "$1"
    if [ -n "$LOG_OUTPUT" ]; then
        printf '%s\n' "$1" >> "$LOG_OUTPUT"
    fi
}

# Translate zot config $1 into $GENERATED; read zot's log file paths into
# LOG_OUTPUT and LOG_AUDIT.
translate() {
    config=$1
    [ -r "$config" ] || fail "config file $config not found"
    mkdir -p "$RUN_DIR"
    if ! jq --arg want distribution -f "$TRANSLATE" "$config" > "$GENERATED.tmp"; then
        fail "config file $config is invalid (see the jq error above)"
    fi
    mv "$GENERATED.tmp" "$GENERATED"
    LOG_OUTPUT=$(jq -r --arg want log-output -f "$TRANSLATE" "$config")
    LOG_AUDIT=$(jq -r --arg want log-audit -f "$TRANSLATE" "$config")
    htpasswd=$(jq -r '.auth.htpasswd.path // ""' "$GENERATED")
    # distribution would create a missing htpasswd file with a random user and
    # print its password; zot fails instead, and so does the stand-in.
    if [ -n "$htpasswd" ] && [ ! -r "$htpasswd" ]; then
        fail "htpasswd file $htpasswd not found"
    fi
}

# Copy the registry's output (JSON lines on the FIFO) to stdout, to zot's
# log.output file and, for completed requests that change something, to
# log.audit.
copy_logs() {
    while IFS= read -r line; do
        printf '%s\n' "$line"
        if [ -n "$LOG_OUTPUT" ]; then
            printf '%s\n' "$line" >> "$LOG_OUTPUT"
        fi
        if [ -n "$LOG_AUDIT" ]; then
            case "$line" in
                *'"msg":"response completed"'*)
                    case "$line" in
                        *'"http.request.method":"PUT"'* | *'"http.request.method":"POST"'* | \
                        *'"http.request.method":"PATCH"'* | *'"http.request.method":"DELETE"'*)
                            printf '%s\n' "$line" >> "$LOG_AUDIT"
                            ;;
                    esac
                    ;;
            esac
        fi
    done
}

serve() {
    translate "$1"
    for path in "$LOG_OUTPUT" "$LOG_AUDIT"; do
        if [ -n "$path" ]; then
            mkdir -p "${path%/*}"
        fi
    done
    log_line "{\"level\":\"info\",\"msg\":\"zot stand-in $(standin_version) starting: distribution registry with config translated from $1\"}"
    if [ -z "$LOG_OUTPUT" ] && [ -z "$LOG_AUDIT" ]; then
        exec "$REGISTRY" serve "$GENERATED"
    fi
    fifo=$RUN_DIR/log.fifo
    rm -f "$fifo"
    mkfifo "$fifo"
    copy_logs < "$fifo" &
    # exec keeps the registry as this process, so it receives podman's SIGTERM itself.
    exec "$REGISTRY" serve "$GENERATED" > "$fifo" 2>&1
}

case "${1:-}" in
    serve)
        [ $# -eq 2 ] || fail "usage: zot serve CONFIG"
        serve "$2"
        ;;
    verify)
        [ $# -eq 2 ] || fail "usage: zot verify CONFIG"
        translate "$2"
        printf '{"level":"info","msg":"config file %s is valid for zot stand-in %s"}\n' \
            "$2" "$(standin_version)"
        ;;
    -v | --version | version)
        printf 'zot stand-in %s (%s)\n' "$(standin_version)" "$("$REGISTRY" --version)"
        ;;
    *)
        echo "usage: zot serve CONFIG | zot verify CONFIG | zot --version" >&2
        exit 2
        ;;
esac
