#!/usr/bin/env bash
# magiclens serve on loopback with a tiny random model: search results equal
# `magiclens search`, malformed requests get the right 4xx and the server keeps
# serving, admin endpoints need the token, reload and add work
# (tests/reference/serve_api.py), and SIGTERM stops it cleanly.
set -euo pipefail
T="$ML_TMP/serve"
rm -rf "$T"; mkdir -p "$T/extra"
PY=/usr/bin/python3
$PY tests/reference/make_images.py "$T/img" --no-expected > /dev/null
$PY tests/reference/make_checkpoint.py --size tiny --seed 11 --out "$T/m.pkl" > /dev/null
$PY -c "from PIL import Image; Image.new('RGB', (40, 30), (10, 200, 90)).save('$T/extra/new.png')"
"$BUILD/magiclens" index --model "$T/m.pkl" --images "$T/img" --output "$T/x.mlindex" --quiet 2> /dev/null
TOKEN=serve-test-token-1234
"$BUILD/magiclens" serve --index "$T/x.mlindex" --model "$T/m.pkl" --port 0 --token "$TOKEN" \
    --max-upload-mb 1 --max-text 2000 --workers 2 --queue 8 > "$T/stdout" 2> "$T/stderr" &
PID=$!
trap 'kill $PID 2> /dev/null || true' EXIT
# Wait for the "listening on" line (bounded: 60 s, the server may be under ASan).
PORT=""
for _ in $(seq 600); do
    PORT=$(sed -n 's/^listening on http:\/\/127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$T/stdout")
    [ -n "$PORT" ] && break
    kill -0 $PID 2> /dev/null || { cat "$T/stderr"; echo "server exited before listening"; exit 1; }
    sleep 0.1
done
[ -n "$PORT" ] || { echo "server did not print its port"; exit 1; }
echo "server on port $PORT"
rc=0
$PY tests/reference/serve_api.py "$BUILD/magiclens" "$T/m.pkl" "$T/x.mlindex" "$T/img" "$PORT" "$TOKEN" "$PID" || rc=1
kill -TERM $PID
wait $PID; src=$?
trap - EXIT
echo "server exit status $src"
grep -E 'ERROR|Sanitizer|runtime error' "$T/stderr" && rc=1
[ $src -eq 0 ] || rc=1
exit $rc
