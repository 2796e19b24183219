#!/usr/bin/env bash
# One full base-size (ViT-B/16 + fusion, 166M parameters) random checkpoint in
# the official format, end to end against the float64 reference, from .pkl
# and from the converted .mlens (which must give identical bytes).
set -euo pipefail
if [ -n "${ML_SKIP_SLOW:-}" ]; then echo "skipped (ML_SKIP_SLOW)"; exit 0; fi
PY=/usr/bin/python3
ML="$BUILD/magiclens"
T="$ML_TMP/base"
rm -rf "$T"; mkdir -p "$T"
$PY tests/reference/make_images.py "$T/img" --no-expected > /dev/null
$PY tests/reference/make_checkpoint.py --size base --seed 11 --out "$T/base.pkl" > /dev/null
cat > "$T/items.jsonl" <<'JSONL'
{"id": 0, "image": "img/jpeg_progressive.jpg"}
{"id": 1, "image": "img/jpeg_progressive.jpg", "text": "inside view of this building"}
{"id": 2, "image": "img/png_small_50x37.png", "text": "wow!\"$ the same dish, but raw ingredients"}
{"id": 3, "image": "img/webp_lossy.webp", "text": "find a dog but it is a \u201ccartoon\u201d &amp; smaller"}
JSONL
"$ML" embed --precision fp32 --model "$T/base.pkl" --input "$T/items.jsonl" --output "$T/c.npy" --quiet
"$ML" convert --model "$T/base.pkl" --output "$T/base.mlens" --quiet
"$ML" embed --precision fp32 --model "$T/base.mlens" --input "$T/items.jsonl" --output "$T/c2.npy" --quiet
cmp "$T/c.npy" "$T/c2.npy"
rm -f "$T/base.mlens"
$PY tests/reference/ref_embed.py --model "$T/base.pkl" --input "$T/items.jsonl" --output "$T/ref.npy" > /dev/null 2>&1
$PY tests/reference/compare_npy.py "$T/c.npy" "$T/ref.npy"
rm -f "$T/base.pkl"
