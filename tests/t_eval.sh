#!/usr/bin/env bash
# `magiclens eval` on miniature CIRR / CIRCO / FashionIQ benchmarks in their
# shipped layouts, with a tiny random model: every metric equals an
# independent numpy computation from float64 reference embeddings, the
# test-split submission files have the servers' layouts, and bad input is
# reported by name (tests/reference/eval_check.py).
set -euo pipefail
T="$ML_TMP/eval"
rm -rf "$T"; mkdir -p "$T"
/usr/bin/python3 tests/reference/make_checkpoint.py --size tiny --seed 21 --out "$T/m.pkl" > /dev/null
/usr/bin/python3 tests/reference/eval_check.py "$BUILD/magiclens" "$T/m.pkl" "$T/work"
