#!/usr/bin/env bash
# `make run`: the main job.  Gets the model (official base checkpoint, or a
# clearly labelled random-weight demo model when it cannot be downloaded),
# converts it to the native format once, and embeds an image folder
# (MAGICLENS_IMAGES, default: generated demo pictures) as gallery items plus
# one instruction query per image, writing out/embeddings.npy.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS="${MAGICLENS_MODELS:-models}"
OUT="${MAGICLENS_OUT:-out}"
QUERY_TEXT="${MAGICLENS_QUERY:-the same object, seen from inside}"
ML=build/magiclens
mkdir -p "$MODELS" "$OUT"

model="$MODELS/magic_lens_clip_base.pkl"
vocab="$MODELS/bpe_simple_vocab_16e6.txt.gz"
if [ ! -s "$model" ] && ! bash scripts/download-model.sh "$MODELS" base; then
    echo "run: the official weights could not be downloaded (no network?)." >&2
    echo "run: falling back to a RANDOM-WEIGHT demo model: the numbers below show the" >&2
    echo "run: pipeline working, not MagicLens' quality." >&2
    model="$MODELS/demo-random-tiny.pkl"
    [ -s "$model" ] || /usr/bin/python3 tests/reference/make_checkpoint.py --size tiny --seed 0 --out "$model" >/dev/null
fi
if [ ! -s "$vocab" ]; then
    for v in "${MAGICLENS_VOCAB:-}" ../shared/assets/bpe_simple_vocab_16e6.txt.gz; do
        [ -n "$v" ] && [ -s "$v" ] && cp "$v" "$vocab" && break
    done
fi
[ -s "$vocab" ] || { echo "run: no CLIP vocabulary; run scripts/download-model.sh" >&2; exit 1; }

native="${model%.pkl}.mlens"
if [ ! -s "$native" ]; then
    "$ML" convert --model "$model" --vocab "$vocab" --output "$native"
fi

images="${MAGICLENS_IMAGES:-}"
if [ -z "$images" ]; then
    images="$OUT/demo-images"
    if [ ! -f "$images/good.txt" ]; then
        /usr/bin/python3 tests/reference/make_images.py "$images" --no-expected >/dev/null
        (cd "$images" && xargs rm -f < bad.txt) # the fixture set also has broken files
    fi
fi
images="$(realpath "$images")"
items="$OUT/items.jsonl"
find "$images" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.webp' -o -iname '*.gif' \) \
    | sort | /usr/bin/python3 -c '
import json, sys
paths = [l.rstrip("\n") for l in sys.stdin]
text = sys.argv[1]
for i, p in enumerate(paths):
    print(json.dumps({"id": f"gallery/{i}", "image": p}))
for i, p in enumerate(paths):
    print(json.dumps({"id": f"query/{i}", "image": p, "text": text}))
' "$QUERY_TEXT" > "$items"
n=$(wc -l < "$items")
echo "run: embedding $n items (gallery + queries) from $images with $native" >&2
start=$(date +%s.%N)
set +e
"$ML" embed --model "$native" --input "$items" --output "$OUT/embeddings.npy"
rc=$?
set -e
end=$(date +%s.%N)
echo "run: wrote $OUT/embeddings.npy ($n rows) in $(echo "$end - $start" | bc 2>/dev/null || echo '?') s; exit status $rc" >&2
# Exit 1 only means some items failed (each was reported above).
[ "$rc" -le 1 ]
