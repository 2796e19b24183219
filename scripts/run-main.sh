#!/usr/bin/env bash
# `make run`: the main job.  Gets the model (official base checkpoint, or a
# clearly labelled random-weight demo model when it cannot be downloaded),
# converts it to the native format once, indexes an image folder (IMAGES,
# default ./photos, else generated demo pictures) into out/photos.mlindex
# (incrementally: a second run embeds only new or changed files), and
# answers a sample image + instruction query and a text-only query.  Offline
# with no vocabulary anywhere it answers image-only and --like queries.
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
# The vocabulary by the lookup every command uses (`magiclens vocab`:
# $MAGICLENS_VOCAB, models/, ../shared/assets/).  Without one the demo still
# runs, image-only: the empty instruction needs no vocabulary.
if found=$("$ML" vocab 2> /dev/null); then
    [ -s "$vocab" ] || cp "$found" "$vocab"
else
    vocab=""
    echo "run: no CLIP vocabulary (offline?): running the image-only demo; the full run (with" >&2
    echo "run: instructions) needs models/bpe_simple_vocab_16e6.txt.gz: scripts/download-model.sh" >&2
fi

native="${model%.pkl}.mlens"
if [ ! -s "$native" ]; then
    "$ML" convert --model "$model" ${vocab:+--vocab "$vocab"} --output "$native"
fi

images="${IMAGES:-${MAGICLENS_IMAGES:-photos}}"
if [ ! -d "$images" ] && [ ! -f "$images" ]; then
    if [ "$images" != photos ]; then echo "run: $images: no such folder or list file" >&2; exit 1; fi
    images="$OUT/demo-photos"
    echo "run: no ./photos folder (set IMAGES=DIR); indexing generated demo pictures in $images" >&2
    if [ ! -f "$images/good.txt" ]; then
        /usr/bin/python3 tests/reference/make_images.py "$images" --no-expected >/dev/null
        (cd "$images" && xargs rm -f < bad.txt && rm -f good.txt bad.txt) # drop the broken fixtures
        touch "$images/good.txt"
    fi
fi
index="$OUT/photos.mlindex"
echo "run: indexing $images into $index (only new or changed files are embedded)" >&2
"$ML" index --model "$native" --images "$images" --output "$index"

# A sample query: the first indexed image (or QUERY_IMAGE) plus an instruction.
query="${QUERY_IMAGE:-$("$ML" export --index "$index" --output "$OUT/export" --quiet && head -1 "$OUT/export/metadata.jsonl" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')}"
echo >&2
if [ -n "$vocab" ]; then
    echo "run: query image $query + \"$QUERY_TEXT\" (top 5):" >&2
    "$ML" search --index "$index" --model "$native" --image "$query" --text "$QUERY_TEXT" -k 5
    echo "run: text-only query \"a photo of a red object\" through the CLIP towers (top 3):" >&2
    "$ML" search --index "$index" --model "$native" --text "a photo of a red object" -k 3
else
    echo "run: query image $query, no instruction (top 5):" >&2
    "$ML" search --index "$index" --model "$native" --image "$query" -k 5
    echo "run: images like the first indexed one (--like 0, top 3):" >&2
    "$ML" search --index "$index" --model "$native" --like 0 -k 3
fi
