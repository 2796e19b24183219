#!/usr/bin/env bash
# `magiclens eval` on miniature DTIN, GeneCIS (object and attribute tasks,
# with Visual Genome crops), text-to-image and custom benchmarks in their
# shipped layouts, with a tiny random model: every metric equals an
# independent numpy computation from float64 reference embeddings, the
# GeneCIS crops equal PIL's, and bad input is reported by name
# (tests/reference/eval_check2.py).
set -euo pipefail
T="$ML_TMP/eval_more"
rm -rf "$T"; mkdir -p "$T"
/usr/bin/python3 tests/reference/make_checkpoint.py --size tiny --seed 23 --out "$T/m.pkl" > /dev/null
/usr/bin/python3 tests/reference/eval_check2.py "$BUILD/magiclens" "$T/m.pkl" "$T/work"
