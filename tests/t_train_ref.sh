#!/usr/bin/env bash
# `magiclens train` equals a PyTorch float64 training run written from the
# documentation (tests/reference/train_torch_ref.py: same data order,
# preprocessing, loss with query negatives and learned or fixed temperature,
# gradient accumulation, clipping, warm-up + cosine schedule,
# torch.optim.AdamW with decay groups): losses within 1e-4 and every trained
# tensor's update within 0.2%, frozen ones unchanged.  Runs: --train fusion,
# --train all, --accum 2 with --temperature, and a start from Hugging Face
# CLIP safetensors with random fusion layers.  Also: the same triplets as a
# WebDataset tar train exactly like the JSONL, and a trained model exported
# to the official .pkl gives the Python reference the C embeddings.
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
T="$ML_TMP/train_ref"
rm -rf "$T"; mkdir -p "$T"
$PY tests/reference/make_checkpoint.py --size tiny64 --seed 21 --out "$T/m.pkl" > /dev/null
$PY tests/reference/make_shapes.py "$T/d" --train 12 --heldout 2 --seed 5 > /dev/null
args=(--steps 4 --batch 5 --lr 1e-3 --warmup 2 --seed 3)
check() { # $1 run name, $2 init model for the reference, the rest: options for both
    local name=$1 init=$2; shift 2
    $PY tests/reference/train_torch_ref.py --model "$init" --data "$T/d/train.jsonl" \
        "$@" --c-run "$T/$name"
}
for mode in fusion all; do
    "$ML" train --init "$T/m.pkl" --data "$T/d/train.jsonl" --output "$T/$mode" \
        "${args[@]}" --train $mode --quiet
    check $mode "$T/m.pkl" "${args[@]}" --train $mode
done
acc=(--steps 3 --batch 3 --accum 2 --lr 1e-3 --warmup 1 --seed 9 --temperature 0.05)
"$ML" train --init "$T/m.pkl" --data "$T/d/train.jsonl" --output "$T/accum" "${acc[@]}" --quiet
check accum "$T/m.pkl" "${acc[@]}"

# Hugging Face CLIP weights + seeded random fusion layers; the reference
# starts from the same weights exported to the official format.
mkdir -p "$T/hf"
$PY tests/reference/make_hf_clip.py --out "$T/hf/model.safetensors" --seed 2 > /dev/null
"$ML" train --init "$T/hf/model.safetensors" --init-fusion random --data "$T/d/train.jsonl" \
    --output "$T/hf-run" "${args[@]}" --train all --quiet
"$ML" export --model "$T/hf/model.safetensors" --init-fusion random --seed 3 --format flax \
    --output "$T/hf-init.pkl" --quiet
check hf-run "$T/hf-init.pkl" "${args[@]}" --train all

# The same triplets as a WebDataset tar (samples in line order): identical run.
$PY - "$T/d" <<'PYEOF'
import json, sys, tarfile, io
d = sys.argv[1]
with tarfile.open(d + "/train.tar", "w") as tar:
    for i, line in enumerate(open(d + "/train.jsonl")):
        t = json.loads(line)
        for role in ("query", "target"):
            tar.add(d + "/" + t[role + "_image"], "s%04d.%s.png" % (i, role))
        data = json.dumps({"instruction": t["instruction"]}).encode()
        info = tarfile.TarInfo("s%04d.json" % i)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
PYEOF
"$ML" train --init "$T/m.pkl" --data "$T/d/train.tar" --output "$T/tar" "${args[@]}" --quiet
cmp <(grep -o '"loss":[^,]*' "$T/fusion/log.jsonl") <(grep -o '"loss":[^,]*' "$T/tar/log.jsonl") ||
    { echo "tar data trained differently from the same JSONL"; exit 1; }
cmp "$T/fusion/final.mlens" "$T/tar/final.mlens"

# A trained model in the official format: the Python reference embeds with it
# exactly as magiclens does with the .mlens.
"$ML" export --model "$T/all/final.mlens" --format flax --output "$T/trained.pkl" --quiet
head -4 "$T/d/heldout.jsonl" | $PY -c "
import json, sys
for l in sys.stdin:
    t = json.loads(l)
    print(json.dumps({'image': 'd/' + t['query_image'], 'text': t['instruction']}))
    print(json.dumps({'image': 'd/' + t['target_image']}))" > "$T/items.jsonl"
"$ML" embed --precision fp32 --model "$T/all/final.mlens" --input "$T/items.jsonl" --output "$T/c.npy" --quiet
$PY tests/reference/ref_embed.py --model "$T/trained.pkl" --input "$T/items.jsonl" --output "$T/ref.npy" > /dev/null
$PY tests/reference/compare_npy.py "$T/c.npy" "$T/ref.npy"
echo "train ref: ok"
