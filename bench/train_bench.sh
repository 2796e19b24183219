#!/usr/bin/env bash
# Training throughput of `magiclens train` against the same step in PyTorch
# (bench/train_torch.py), at base size (ViT-B/16 towers + fusion), random
# weights, on this machine's cores:
#   fusion: towers frozen, their outputs cached (steady state after the
#           first epoch), batch 32;
#   all:    full backpropagation through both towers, batch 8.
# Usage: bench/train_bench.sh [THREADS]   (needs a build and the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
TH="${1:-$(nproc)}"
W="${BENCH_DIR:-/tmp/magiclens-train-bench}"
PY=/usr/bin/python3
# the lookup every command uses (`magiclens vocab`: $MAGICLENS_VOCAB, models/, ../shared/assets/)
export MAGICLENS_VOCAB="${MAGICLENS_VOCAB:-$(build/magiclens vocab)}"
mkdir -p "$W"
[ -f "$W/base.pkl" ] || $PY tests/reference/make_checkpoint.py --size base --seed 5 --out "$W/base.pkl" > /dev/null
[ -f "$W/d/train.jsonl" ] || $PY tests/reference/make_shapes.py "$W/d" --train 64 --heldout 1 --size 224 > /dev/null
median() { $PY -c "import json,sys; v=sorted(json.loads(l)['triplets_per_s'] for l in open(sys.argv[1]) if '\"loss\"' in l and json.loads(l)['step']>=int(sys.argv[2])); print('%.1f' % v[len(v)//2])" "$1" "$2"; }
rm -rf "$W/fusion" "$W/all"
build/magiclens train --init "$W/base.pkl" --data "$W/d/train.jsonl" --output "$W/fusion" \
    --train fusion --batch 32 --steps 12 --threads "$TH" --quiet --save-every 0
echo "magiclens fusion (cached towers) batch 32: $(median "$W/fusion/log.jsonl" 4) triplets/s"
$PY bench/train_torch.py --size base --mode fusion --batch 32 --steps 10 --threads "$TH"
build/magiclens train --init "$W/base.pkl" --data "$W/d/train.jsonl" --output "$W/all" \
    --train all --batch 8 --steps 3 --threads "$TH" --quiet --save-every 0
echo "magiclens all batch 8: $(median "$W/all/log.jsonl" 2) triplets/s"
$PY bench/train_torch.py --size base --mode all --batch 8 --steps 3 --threads "$TH"
