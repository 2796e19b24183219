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
. tests/serve_start.sh
serve_start "$T" --index "$T/x.mlindex" --model "$T/m.pkl" --web web
timeout 120 node tests/browser/search.js "http://127.0.0.1:$PORT/" "$T/img/jpeg_baseline.jpg" "$T"
ls "$T"/*.png
