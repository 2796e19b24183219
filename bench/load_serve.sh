#!/usr/bin/env bash
# Load run for `magiclens serve` (docs/serve.md): wrk with 32 connections for
# 30 s per query kind against a server on loopback.
#   bench/load_serve.sh [BUILD] [SECONDS] [CONNECTIONS]
# MODEL=... INDEX=... use an existing model and index; otherwise a tiny random
# model and the test fixture images are generated (scores mean nothing then;
# the numbers measure the server, the index search and the tiny model).
# Needs wrk (scripts/install-deps.sh --bench).  Prints wrk's report per kind.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"; SECS="${2:-30}"; CONNS="${3:-32}"
# the lookup every command uses (`magiclens vocab`: $MAGICLENS_VOCAB, models/, ../shared/assets/)
export MAGICLENS_VOCAB="${MAGICLENS_VOCAB:-$("$BUILD/magiclens" vocab)}"
command -v wrk > /dev/null || { echo "load_serve: wrk is missing (scripts/install-deps.sh --bench)"; exit 1; }
T="${LOAD_TMP:-/tmp/magiclens-load}"
mkdir -p "$T"
if [ -z "${MODEL:-}" ]; then
    MODEL="$T/m.pkl"; INDEX="$T/x.mlindex"
    [ -f "$MODEL" ] || /usr/bin/python3 tests/reference/make_checkpoint.py --size tiny --seed 11 --out "$MODEL" > /dev/null
    [ -d "$T/img" ] || /usr/bin/python3 tests/reference/make_images.py "$T/img" --no-expected > /dev/null
    "$BUILD/magiclens" index --model "$MODEL" --images "$T/img" --output "$INDEX" --quiet 2> /dev/null || true
fi
. tests/serve_start.sh
# shellcheck disable=SC2086
serve_start "$T" --index "$INDEX" --model "$MODEL" --quiet ${SERVE_ARGS:-}
URL="http://127.0.0.1:$PORT"
ID=$(curl -s -H 'Content-Type: application/json' -d '{"text":"x","k":1}' "$URL/api/search" |
     /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["results"][0]["id"])')
IMG=$(ls "$T"/img/jpeg_baseline.jpg 2> /dev/null || echo "${QUERY_IMAGE:?set QUERY_IMAGE}")
printf '{"image_id": %s, "text": "the same thing at night", "k": 10}' "$ID" > "$T/like.json"
printf '{"text": "a photo of a red car", "k": 10}' > "$T/text.json"
/usr/bin/python3 -c "import base64,json,sys; print(json.dumps({'image': base64.b64encode(open(sys.argv[1],'rb').read()).decode(), 'text': 'inside view', 'k': 10}))" "$IMG" > "$T/upload.json"
echo "load_serve: $(nproc) CPUs, $(date -u '+%F %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg), $CONNS connections, ${SECS}s each"
for kind in like text upload; do
    echo "== $kind ($(wc -c < "$T/$kind.json") byte body)"
    LOAD_BODY_FILE="$T/$kind.json" wrk -t2 -c"$CONNS" -d"${SECS}s" --timeout 30s --latency \
        -s bench/load_serve.lua "$URL"
done
curl -s "$URL/metrics" | grep -E '^magiclens_requests_total\{route="search"'
