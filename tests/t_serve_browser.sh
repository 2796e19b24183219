#!/usr/bin/env bash
# The web page in headless Chromium (Debian's chromium, driven by playwright-core
# from tests/browser/node_modules): upload, instruction, results, paging, click a
# result, text-only, errors.  Screenshots: $ML_TMP/serve_browser/*.png.
# Missing chromium or playwright-core is a failure: scripts/install-deps.sh installs both.
set -euo pipefail
T="$ML_TMP/serve_browser"
rm -rf "$T"; mkdir -p "$T"
[ -x /usr/bin/chromium ] || { echo "FAIL: /usr/bin/chromium is missing (run scripts/install-deps.sh)"; exit 1; }
command -v node > /dev/null || { echo "FAIL: node is missing (run scripts/install-deps.sh)"; exit 1; }
[ -d tests/browser/node_modules/playwright-core ] ||
    { echo "FAIL: playwright-core is missing in tests/browser/node_modules (run scripts/install-deps.sh)"; exit 1; }
PY=/usr/bin/python3
$PY tests/reference/make_images.py "$T/img" --no-expected > /dev/null
$PY tests/reference/make_checkpoint.py --size tiny --seed 11 --out "$T/m.pkl" > /dev/null
"$BUILD/magiclens" index --model "$T/m.pkl" --images "$T/img" --output "$T/x.mlindex" --quiet 2> /dev/null
"$BUILD/magiclens" serve --index "$T/x.mlindex" --model "$T/m.pkl" --port 0 --web web \
    > "$T/stdout" 2> "$T/stderr" &
PID=$!
trap 'kill $PID 2> /dev/null || true' EXIT
PORT=""
for _ in $(seq 600); do
    PORT=$(sed -n 's/^listening on http:\/\/127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$T/stdout")
    [ -n "$PORT" ] && break
    kill -0 $PID 2> /dev/null || { cat "$T/stderr"; echo "server exited before listening"; exit 1; }
    sleep 0.1
done
[ -n "$PORT" ] || { echo "server did not print its port"; exit 1; }
timeout 120 node tests/browser/search.js "http://127.0.0.1:$PORT/" "$T/img/jpeg_baseline.jpg" "$T"
ls "$T"/*.png
