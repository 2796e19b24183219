# serve_start.sh - sourced by the server tests and bench/load_serve.sh.
#   serve_start DIR ARGS...   starts `$BUILD/magiclens serve --port 0 ARGS...` with
# stdout/stderr in DIR/stdout, DIR/stderr; sets PID and PORT once it prints its
# "listening on" line (polled for up to 60 s: the server may run under ASan),
# and kills it on exit.  Fails if the server exits first.
serve_start() {
    local dir="$1"; shift
    # created here, not by the background job's redirection: the poll below
    # may run before that job does (a missing file ended a test under set -e)
    : > "$dir/stdout"; : > "$dir/stderr"
    "$BUILD/magiclens" serve --port 0 "$@" > "$dir/stdout" 2> "$dir/stderr" &
    PID=$!
    trap 'kill $PID 2> /dev/null || true' EXIT
    PORT=""
    for _ in $(seq 600); do
        PORT=$(sed -n 's/^listening on http:\/\/127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$dir/stdout")
        [ -n "$PORT" ] && return 0
        kill -0 $PID 2> /dev/null || { cat "$dir/stderr"; echo "server exited before listening"; return 1; }
        sleep 0.1
    done
    echo "server did not print its port"
    return 1
}
