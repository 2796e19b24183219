#!/usr/bin/env bash
# Training learns: on generated coloured shapes ("same shape but red", "two
# of them", "the same object bigger", "a square of the same colour"), a tiny
# model with freshly initialised fusion layers goes from chance-level
# held-out recall to well above it (the curve is in the README, Training).
# A perfect attribute matcher reaches recall@1 0.40 here, because
# several held-out targets share all attributes (computed below).
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
T="$ML_TMP/train_learn"
rm -rf "$T"; mkdir -p "$T"
$PY tests/reference/make_checkpoint.py --size tiny64 --seed 21 --out "$T/m.pkl" > /dev/null
$PY tests/reference/make_shapes.py "$T/d" --train 400 --heldout 100 --seed 1 > /dev/null
"$ML" train --init "$T/m.pkl" --init-fusion random --seed 0 --data "$T/d/train.jsonl" \
    --eval "$T/d/heldout.jsonl" --eval-every 100 --output "$T/run" --steps 300 --batch 32 \
    --lr 1e-3 --quiet
$PY - "$T" <<'PYEOF'
import json, sys
from collections import Counter
t = sys.argv[1]
ev = [json.loads(l) for l in open(t + "/run/log.jsonl") if '"eval"' in l]
curve = {e["step"]: e["eval"] for e in ev}
for s in sorted(curve):
    print("step %3d  recall@1 %.2f  @5 %.2f  @10 %.2f" % (s, curve[s]["recall@1"], curve[s]["recall@5"], curve[s]["recall@10"]))
held = [json.loads(l) for l in open(t + "/d/heldout.jsonl")]
same = Counter(json.dumps(h["target_attrs"], sort_keys=True) for h in held)
oracle = sum(1 / same[json.dumps(h["target_attrs"], sort_keys=True)] for h in held) / len(held)
print("attribute oracle recall@1 %.2f" % oracle)
start, end = curve[0], curve[300]
assert start["recall@5"] <= 0.2 and start["recall@1"] <= 0.06, start
assert end["recall@1"] >= 0.12 and end["recall@5"] >= 0.6 and end["recall@10"] >= 0.85, end
assert end["recall@1"] >= 4 * max(start["recall@1"], 0.02), (start, end)
print("learned: recall@1 %.2f -> %.2f" % (start["recall@1"], end["recall@1"]))
PYEOF
