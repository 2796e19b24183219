#!/usr/bin/env bash
# Downloads what magiclens needs to run the released models into models/ (or $1):
#   - CLIP's BPE vocabulary (MIT licence), checked against its sha256;
#   - the official MagicLens checkpoints (Apache 2.0) from Google's bucket.
# usage: scripts/download-model.sh [DIR] [base|large|all|vocab]   (default: models base;
#        vocab: the vocabulary alone, as `make test` fetches it)
set -euo pipefail
dir="${1:-models}"
which_model="${2:-base}"
mkdir -p "$dir"

VOCAB_URL="https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz"
VOCAB_SHA256="924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
BUCKET="https://storage.googleapis.com/gresearch/magiclens/models"

fetch() { # url dest
    local tmp="$2.part"
    if command -v curl >/dev/null; then
        curl -fL --retry 3 --connect-timeout 20 -o "$tmp" "$1"
    else
        wget -q -O "$tmp" "$1"
    fi && mv "$tmp" "$2"
}

vocab="$dir/bpe_simple_vocab_16e6.txt.gz"
if [ ! -s "$vocab" ]; then
    echo "download-model: fetching the CLIP vocabulary" >&2
    fetch "$VOCAB_URL" "$vocab" || { echo "download-model: could not download $VOCAB_URL" >&2; rm -f "$vocab.part"; exit 1; }
fi
echo "$VOCAB_SHA256  $vocab" | sha256sum -c --quiet - ||
    { mv -f "$vocab" "$vocab.bad"; echo "download-model: $vocab had the wrong sha256 (kept as $vocab.bad); retry" >&2; exit 1; }

[ "$which_model" = vocab ] && { echo "download-model: done: $vocab" >&2; exit 0; }
models="magic_lens_clip_base.pkl"
[ "$which_model" = large ] && models="magic_lens_clip_large.pkl"
[ "$which_model" = all ] && models="magic_lens_clip_base.pkl magic_lens_clip_large.pkl"
for m in $models; do
    [ -s "$dir/$m" ] && continue
    echo "download-model: fetching $m" >&2
    if ! fetch "$BUCKET/$m" "$dir/$m"; then
        cat >&2 <<MSG
download-model: could not download $BUCKET/$m.
  The checkpoints are published by google-deepmind/magiclens; other ways to get them:
    gsutil cp gs://gresearch/magiclens/models/$m $dir/
    or the Google Drive folder linked from https://github.com/google-deepmind/magiclens
MSG
        exit 1
    fi
done
echo "download-model: done: $(ls "$dir")" >&2
