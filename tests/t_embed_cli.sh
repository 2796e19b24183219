#!/usr/bin/env bash
# The embed command's behaviour on bad input: failed items are reported on
# stderr with their id and reason, written as NaN rows (.npy) or "error"
# (.jsonl), the other items are still right, and the exit status is 1.
# Also: --truncate, single-image mode, missing vocabulary, hostile model files.
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
T="$ML_TMP/cli"
rm -rf "$T"; mkdir -p "$T"
$PY tests/reference/make_images.py "$T/img" --no-expected > /dev/null
$PY tests/reference/make_checkpoint.py --size tiny --seed 7 --out "$T/m.pkl" > /dev/null
long=$(printf 'word%.0s ' $(seq 1 90))
cat > "$T/items.jsonl" <<JSONL
{"id": "ok1", "image": "img/jpeg_baseline.jpg", "text": "a red one"}
{"id": "broken", "image": "img/$(head -1 "$T/img/bad.txt")"}
{"id": "missing", "image": "img/does-not-exist.jpg"}
this is not json
{"id": "toolong", "image": "img/png_rgb.png", "text": "$long"}
{"id": 42, "image": "$T/img/png_rgb.png", "text": ""}

{"id": "noimage", "text": "x"}
{"id": "ok2", "image": "img/webp_lossy.webp"}
JSONL
set +e
"$ML" embed --precision fp32 --model "$T/m.pkl" --input "$T/items.jsonl" --output "$T/out.npy" 2> "$T/err.txt"
rc=$?
"$ML" embed --precision fp32 --model "$T/m.pkl" --input "$T/items.jsonl" --output "$T/out.jsonl" 2> /dev/null
rc2=$?
set -e
cat "$T/err.txt"
[ "$rc" -eq 1 ] && [ "$rc2" -eq 1 ] || { echo "expected exit status 1, got $rc / $rc2"; exit 1; }
for id in '"broken"' '"missing"' '"line 4"' '"toolong"' '"noimage"'; do
    grep -q "item $id" "$T/err.txt" || { echo "no error reported for $id"; exit 1; }
done
grep -q 'item "toolong".*77' "$T/err.txt"
grep -q 'does-not-exist.jpg' "$T/err.txt"
# The good rows equal the reference; the failed ones are NaN.
$PY tests/reference/ref_embed.py --model "$T/m.pkl" --input "$T/items.jsonl" --output "$T/ref.npy" --truncate > /dev/null 2>&1 || true
$PY - "$T" <<'PYEOF'
import json, sys
import numpy as np
T = sys.argv[1]
c = np.load(f"{T}/out.npy")
assert c.shape[0] == 8, c.shape          # blank line skipped, bad JSON line kept as an item
nan = [i for i in range(8) if np.isnan(c[i]).all()]
assert nan == [1, 2, 3, 4, 6], nan
rows = [json.loads(l) for l in open(f"{T}/out.jsonl")]
assert [("error" in r) for r in rows] == [False, True, True, True, True, False, True, False]
assert rows[5]["id"] == 42 and rows[0]["id"] == "ok1"
assert np.allclose(np.array(rows[0]["embedding"]), c[0], atol=1e-6)
PYEOF
# With --truncate the long instruction embeds, and matches the reference's truncation.
grep -v -e broken -e missing -e 'not json' -e noimage "$T/items.jsonl" | grep . > "$T/good.jsonl"
"$ML" embed --precision fp32 --model "$T/m.pkl" --input "$T/good.jsonl" --output "$T/trunc.npy" --truncate --quiet
$PY tests/reference/ref_embed.py --model "$T/m.pkl" --input "$T/good.jsonl" --output "$T/trunc.ref.npy" --truncate > /dev/null 2>&1
$PY tests/reference/compare_npy.py "$T/trunc.npy" "$T/trunc.ref.npy"

# Single image mode prints one JSON object equal to the batch row.
"$ML" embed --precision fp32 --model "$T/m.pkl" --image "$T/img/jpeg_baseline.jpg" --text "a red one" > "$T/one.json"
$PY -c "
import json, numpy as np, sys
o = json.load(open('$T/one.json')); c = np.load('$T/out.npy')
assert o['text'] == 'a red one'
assert np.abs(np.array(o['embedding']) - c[0]).max() < 1e-6
"
# A broken query image is an error naming the file, exit 1.
if "$ML" embed --precision fp32 --model "$T/m.pkl" --image "$T/img/$(head -1 "$T/img/bad.txt")" 2> "$T/e1"; then exit 1; fi
grep -q "$(head -1 "$T/img/bad.txt")" "$T/e1"

# No vocabulary anywhere (a copy of the binary outside the repository, so
# neither models/ nor ../shared is beside it): image-only embedding still
# works and equals the embedding with the vocabulary (the empty instruction
# is SOT + EOT); an instruction is a clear error that says where to get it.
mkdir -p "$T/nv/bin"; cp "$ML" "$T/nv/bin/magiclens"
(cd "$T/nv" && env -u MAGICLENS_VOCAB bin/magiclens embed --precision fp32 --model "$T/m.pkl" --image "$T/img/png_rgb.png" > "$T/nv/img.json")
"$ML" embed --precision fp32 --model "$T/m.pkl" --image "$T/img/png_rgb.png" > "$T/img.json"
$PY -c "
import json; a = json.load(open('$T/nv/img.json')); b = json.load(open('$T/img.json'))
assert a['embedding'] == b['embedding'], 'no-vocabulary image embedding differs'
"
if (cd "$T/nv" && env -u MAGICLENS_VOCAB bin/magiclens embed --precision fp32 --model "$T/m.pkl" --image "$T/img/png_rgb.png" --text "a red one") 2> "$T/e2"; then exit 1; fi
grep -q "download-model.sh" "$T/e2" && grep -q "a red one" "$T/e2"
if (cd "$T/nv" && env -u MAGICLENS_VOCAB bin/magiclens vocab) 2> "$T/e2b"; then exit 1; fi
grep -q "models/bpe_simple_vocab_16e6.txt.gz" "$T/e2b"
# The lookup order: models/ of the repository (the binary's parent folder),
# and $MAGICLENS_VOCAB before it; the instruction then works.
mkdir -p "$T/nv/models"; cp "$MAGICLENS_VOCAB" "$T/nv/models/"
[ "$(cd / && env -u MAGICLENS_VOCAB "$T/nv/bin/magiclens" vocab)" = "$T/nv/models/bpe_simple_vocab_16e6.txt.gz" ]
[ "$(cd / && MAGICLENS_VOCAB=/elsewhere.gz "$T/nv/bin/magiclens" vocab --vocab "$MAGICLENS_VOCAB")" = "$MAGICLENS_VOCAB" ]
[ "$(cd / && MAGICLENS_VOCAB=/elsewhere.gz "$T/nv/bin/magiclens" vocab 2>/dev/null)" = "" ]
(cd / && env -u MAGICLENS_VOCAB "$T/nv/bin/magiclens" embed --precision fp32 --model "$T/m.pkl" --image "$T/img/png_rgb.png" --text "a red one" > "$T/nv/t.json")
"$ML" embed --precision fp32 --model "$T/m.pkl" --image "$T/img/png_rgb.png" --text "a red one" > "$T/t.json"
cmp "$T/nv/t.json" "$T/t.json"
if "$ML" embed --precision fp32 --model "$T/m.pkl" --vocab "$T/nope.gz" --image "$T/img/png_rgb.png" 2> "$T/e3"; then exit 1; fi
grep -q "nope.gz" "$T/e3"

# Hostile or foreign model files: clear errors, never a crash.
head -c 100000 /dev/urandom > "$T/random.pkl"
head -c 1000 "$T/m.pkl" > "$T/truncated.pkl"
$PY -c "import pickle; pickle.dump({'a': 1}, open('$T/dict.pkl', 'wb'))"
printf 'cos\nsystem\n(S"echo hacked"\ntR.' > "$T/evil.pkl"
: > "$T/empty.pkl"
for f in random truncated dict evil empty; do
    set +e; "$ML" info --model "$T/$f.pkl" > /dev/null 2> "$T/e_$f"; rc=$?; set -e
    [ "$rc" -eq 1 ] || { echo "$f.pkl: exit $rc"; cat "$T/e_$f"; exit 1; }
    grep -q "$f.pkl" "$T/e_$f" || { echo "$f.pkl: error does not name the file"; cat "$T/e_$f"; exit 1; }
    echo "$f.pkl -> $(cat "$T/e_$f")"
done
# `tokenize` prints 77 ids per text.
"$ML" tokenize "a photo of a cat" "" | $PY -c "
import json, sys
rows = [json.loads(l) for l in sys.stdin]
assert len(rows) == 2 and all(len(r) == 77 for r in rows)
assert rows[1][:3] == [49406, 49407, 0], rows[1][:3]
assert rows[0][:7] == [49406, 320, 1125, 539, 320, 2368, 49407], rows[0][:7]
"
# A forced instruction set that does not exist is an error, not a silent fallback.
if MAGICLENS_ISA=foo "$ML" embed --model "$T/m.pkl" --image "$T/img/png_rgb.png" 2> "$T/e4"; then exit 1; fi
grep -q "MAGICLENS_ISA=foo" "$T/e4"
# Unknown precision is a usage error (exit 2).
set +e; "$ML" embed --precision fp16 --model "$T/m.pkl" --image "$T/img/png_rgb.png" 2> /dev/null; rc=$?; set -e
[ "$rc" -eq 2 ]
echo "cli OK"
