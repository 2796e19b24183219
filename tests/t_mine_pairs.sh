#!/usr/bin/env bash
# `magiclens mine pairs` against an independent float64 computation: shards
# in the `mine fetch` layout (4 pages: a near-duplicate pair, a page with one
# image, damaged samples, a page spanning two shards), the CLIP image and
# text embeddings from tests/reference/ref_embed.py, and the documented
# scoring and selection rule applied in Python (mine_pairs_ref.py).  The
# similarity band is chosen from the reference values so that pairs are
# dropped on both sides of it.  Also: paths relative to the output folder,
# --both-directions, determinism, and errors (missing / empty / corrupt input).
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
REF=tests/reference/mine_pairs_ref.py
T="$ML_TMP/mine_pairs"
rm -rf "$T"; mkdir -p "$T/sub"
$PY $REF make "$T"
$PY tests/reference/make_checkpoint.py --size tiny --seed 7 --out "$T/m.pkl" > /dev/null
$PY tests/reference/ref_embed.py --model "$T/m.pkl" --input "$T/items.jsonl" --output "$T/ref.npy" \
    --clip-out "$T/clip.npy" --truncate 2> /dev/null
read -r LO HI < <($PY $REF band "$T" "$T/clip.npy")
echo "band: $LO .. $HI"
common=(--shards "$T/shards" --model "$T/m.pkl" --precision fp32 --min-sim "$LO" --max-sim "$HI" --quiet)

# A: output next to the shards folder; at most 3 pairs a page, 2 uses an image.
"$ML" mine pairs "${common[@]}" --output "$T/pairs.jsonl" --max-pairs-per-page 3 --max-uses 2 \
    --stats "$T/stats.json" 2> "$T/err.txt"
cat "$T/err.txt"
$PY $REF check "$T" "$T/clip.npy" "$T/pairs.jsonl" "$T/stats.json" "$LO" "$HI" 0.3 3 2 shards
grep -q 'g00000003_001.png: cannot decode' "$T/err.txt"
grep -q 'g00000003_003.json: not a JSON object' "$T/err.txt"
$PY - "$T/stats.json" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))
assert s['pairs_dropped']['near_duplicate'] == 1 and s['pairs_dropped']['unrelated'] >= 1, s
assert s['samples'] == 16 and s['images_in'] == 14 and s['groups'] == 4, s
assert s['pairs_per_s'] > 0 and s['images_per_s'] > 0
print('throughput: %.0f images/s, %.0f candidate pairs/s' % (s['images_per_s'], s['pairs_per_s']))
PYEOF

# B: output in another folder (tar paths relative to it), 1 use per image,
# another alt weight.
"$ML" mine pairs "${common[@]}" --output "$T/sub/pairs.jsonl" --max-pairs-per-page 4 --max-uses 1 \
    --alt-weight 0.5 --stats "$T/sub/stats.json" 2> /dev/null
$PY $REF check "$T" "$T/clip.npy" "$T/sub/pairs.jsonl" "$T/sub/stats.json" "$LO" "$HI" 0.5 4 1 ../shards \
    | tee "$T/b.txt"
grep -q "image_cap" "$T/b.txt"

# Deterministic: the same bytes again.  --both-directions: each pair, then
# the same pair with query and target swapped.
"$ML" mine pairs "${common[@]}" --output "$T/again.jsonl" --max-pairs-per-page 3 --max-uses 2 2> /dev/null
cmp "$T/pairs.jsonl" "$T/again.jsonl"
"$ML" mine pairs "${common[@]}" --output "$T/both.jsonl" --max-pairs-per-page 3 --max-uses 2 \
    --both-directions 2> /dev/null
$PY - "$T/pairs.jsonl" "$T/both.jsonl" <<'PYEOF'
import json, sys
one = [json.loads(l) for l in open(sys.argv[1])]
both = [json.loads(l) for l in open(sys.argv[2])]
assert len(both) == 2 * len(one)
for k, p in enumerate(one):
    a, b = both[2 * k], both[2 * k + 1]
    assert a == p, (a, p)
    assert b['query'] == p['target'] and b['target'] == p['query'] and b['score'] == p['score']
PYEOF

# Errors: exit 1 naming the input; the previous output stays as it was.
cp "$T/pairs.jsonl" "$T/keep.jsonl"
if "$ML" mine pairs "${common[@]}" --shards "$T/nope" --output "$T/pairs.jsonl" 2> "$T/e1"; then exit 1; fi
grep -q "$T/nope" "$T/e1"
mkdir -p "$T/empty"
if "$ML" mine pairs "${common[@]}" --shards "$T/empty" --output "$T/pairs.jsonl" 2> "$T/e2"; then exit 1; fi
grep -q "no .tar shards" "$T/e2"
mkdir -p "$T/cut"
head -c 30000 "$T/shards/shard-000000.tar" > "$T/cut/shard-000000.tar"
set +e
"$ML" mine pairs "${common[@]}" --shards "$T/cut" --output "$T/pairs.jsonl" 2> "$T/e3"; rc=$?
set -e
cat "$T/e3"
[ "$rc" -eq 1 ] && grep -q "shard-000000.tar" "$T/e3"
cmp "$T/pairs.jsonl" "$T/keep.jsonl"
[ ! -e "$T/pairs.jsonl.tmp" ]
set +e; "$ML" mine pairs --shards "$T/shards" --output x.jsonl 2> /dev/null; rc=$?; set -e
[ "$rc" -eq 2 ]
set +e; "$ML" mine pairs "${common[@]}" --output x.jsonl --min-sim 0.9 --max-sim 0.5 2> /dev/null; rc=$?; set -e
[ "$rc" -eq 2 ]
echo "mine pairs OK"
