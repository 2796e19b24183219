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
. tests/serve_start.sh
serve_start "$T" --index "$T/x.mlindex" --model "$T/m.pkl" --token "$TOKEN" \
    --max-upload-mb 1 --max-text 2000 --workers 2 --queue 8
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
