#!/usr/bin/env bash
# End-to-end parity: `magiclens embed` on tiny random checkpoints written in
# the official format vs the float64 PyTorch reference (tests/reference).
# Covers every image fixture, instructions with punctuation / Unicode / HTML
# entities / curly quotes / the id-0 token, bf16 and f16 checkpoints, pickle
# protocols 2-5, chunked arrays, a capped-logit model, the second-stage resize
# (64-pixel tower), the .mlens format, and JSONL output; on every
# instruction-set path the CPU supports (MAGICLENS_ISA).
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
T="$ML_TMP/parity"
rm -rf "$T"; mkdir -p "$T"
$PY tests/reference/make_images.py "$T/img" --no-expected > /dev/null

# Items: every good image, each with a different instruction; plus a few
# images with every instruction.
$PY - "$T" <<'PYEOF'
import json, sys
T = sys.argv[1]
good = open(f"{T}/img/good.txt").read().split()
texts = [
    "",
    "inside view of this building",
    "the same dish, but raw ingredients!",
    'wow!"$ that is it',                      # '!' without </w> is id 0: padding mask
    "it's \u201ccurly\u201d and \u2018single\u2019 quotes",
    "fish &amp;amp; chips &eacute; &#x27;q&#39; &lt;b&gt;",
    "caf\u00e9 vs cafe\u0301, na\u00efve, \u00c5ngstr\u00f6m",
    "\ufb01sh \ufb02ower in \uff21\uff22\uff23\uff11\uff12\uff13 width",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 and emoji \U0001F642\U0001F308",
    "  lots\t\tof \n whitespace\u00a0 here  ",
    "UPPER Case \u0130stanbul \u039f\u0394\u039f\u03a3 stra\u00dfe",
    "numbers 3.14, 1,000 and 42nd; (brackets) [x] {y} <z> @#%^*",
    "find a red car but it is blue and parked in front of a white house with two windows",
]
with open(f"{T}/items.jsonl", "w") as f:
    k = 0
    for i, g in enumerate(good):
        f.write(json.dumps({"id": k, "image": "img/" + g, "text": texts[i % len(texts)]}) + "\n"); k += 1
    for g in good[:3]:
        for t in texts:
            f.write(json.dumps({"id": f"x{k}", "image": "img/" + g, "text": t}) + "\n"); k += 1
print(k, "items")
PYEOF

# Every instruction-set path this CPU supports is held to the same bound
# (fp32 cosine >= 0.99999, max abs diff <= 1e-4); the default path's output
# is $name.c.npy.
isas=$("$ML" cpu | $PY -c "import json,sys; print(' '.join(json.load(sys.stdin)['isa_supported']))")
echo "instruction sets: $isas"
check() { # name model reference-model
    local name="$1" model="$2"
    $PY tests/reference/ref_embed.py --model "$3" --input "$T/items.jsonl" --output "$T/$name.ref.npy" > /dev/null 2>&1
    "$ML" embed --precision fp32 --model "$model" --input "$T/items.jsonl" --output "$T/$name.c.npy" --quiet
    echo "== $name (default path): $($PY tests/reference/compare_npy.py "$T/$name.c.npy" "$T/$name.ref.npy" | tail -1)"
    $PY tests/reference/compare_npy.py "$T/$name.c.npy" "$T/$name.ref.npy" > /dev/null
    for isa in $isas; do
        MAGICLENS_ISA=$isa "$ML" embed --precision fp32 --model "$model" --input "$T/items.jsonl" --output "$T/$name.$isa.npy" --quiet
        echo "== $name $isa: $($PY tests/reference/compare_npy.py "$T/$name.$isa.npy" "$T/$name.ref.npy" | tail -1)"
        $PY tests/reference/compare_npy.py "$T/$name.$isa.npy" "$T/$name.ref.npy" > /dev/null
    done
}

G=tests/reference/make_checkpoint.py
$PY $G --size tiny --seed 1 --protocol 4 --out "$T/a.pkl" > /dev/null
$PY $G --size tiny --seed 2 --protocol 2 --dtype bfloat16 --key-order shuffle --logit-boost 8 --out "$T/b.pkl" > /dev/null
$PY $G --size tiny64 --seed 3 --protocol 5 --dtype float16 --chunk-bytes 100000 --out "$T/c.pkl" > /dev/null
$PY $G --size tiny --seed 4 --protocol 3 --key-order spec --out "$T/d.pkl" > /dev/null

check f32-proto4 "$T/a.pkl" "$T/a.pkl"
check bf16-proto2-capped "$T/b.pkl" "$T/b.pkl"
check f16-proto5-chunked-64px "$T/c.pkl" "$T/c.pkl"
check f32-proto3 "$T/d.pkl" "$T/d.pkl"

# The native format gives the same numbers as the .pkl it came from.
"$ML" convert --model "$T/b.pkl" --output "$T/b.mlens" --quiet
check mlens-from-bf16 "$T/b.mlens" "$T/b.pkl"
# ...and carries its vocabulary: no --vocab, no MAGICLENS_VOCAB.
env -u MAGICLENS_VOCAB "$ML" embed --precision fp32 --model "$T/b.mlens" --input "$T/items.jsonl" --output "$T/novocab.npy" --quiet
cmp "$T/novocab.npy" "$T/mlens-from-bf16.c.npy"

# JSONL output holds the same embeddings.
"$ML" embed --precision fp32 --model "$T/a.pkl" --input "$T/items.jsonl" --output "$T/a.jsonl" --quiet
$PY tests/reference/compare_npy.py "$T/a.jsonl" "$T/f32-proto4.ref.npy"
echo "parity OK"
