#!/usr/bin/env bash
# `magiclens train` equals a PyTorch float64 training run written from the
# documentation (tests/reference/train_torch_ref.py: same data order,
# preprocessing, loss with query negatives and learned temperature, clipping,
# warm-up + cosine schedule, torch.optim.AdamW with decay groups): losses
# within 1e-4 and every trained tensor's update within 0.2%, frozen ones
# unchanged; for --train fusion and --train all.
set -euo pipefail
PY=/usr/bin/python3
T="$ML_TMP/train_ref"
rm -rf "$T"; mkdir -p "$T"
$PY tests/reference/make_checkpoint.py --size tiny64 --seed 21 --out "$T/m.pkl" > /dev/null
$PY tests/reference/make_shapes.py "$T/d" --train 12 --heldout 2 --seed 5 > /dev/null
args=(--steps 4 --batch 5 --lr 1e-3 --warmup 2 --seed 3)
for mode in fusion all; do
    "$BUILD/magiclens" train --init "$T/m.pkl" --data "$T/d/train.jsonl" --output "$T/$mode" \
        "${args[@]}" --train $mode --quiet
    $PY tests/reference/train_torch_ref.py --model "$T/m.pkl" --data "$T/d/train.jsonl" \
        "${args[@]}" --train $mode --c-run "$T/$mode"
done
