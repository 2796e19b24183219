#!/usr/bin/env bash
# `magiclens eval` on the REAL annotation files of CIRR (val) and FashionIQ
# (dress, val) from $ML_SHARED/benchmarks (never copied into the project).
# Their images are not distributed there, so each referenced image is
# written as a small distinct PNG; the loaders must then read every query
# and gallery item of the real files (counts checked against Python's
# reading of the same JSON), score every query, and report recalls that
# Python recomputes from rankings.jsonl and the real targets.  Skipped
# (exit 77, one SKIP line) when ../shared is absent.
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
B="$ML_SHARED/benchmarks"
if [ ! -f "$B/cirr/cap.rc2.val.json" ] || [ ! -f "$B/fashioniq/cap.dress.val.json" ]; then
    echo "SKIP t_eval_real: $B is absent (the real benchmark annotations live in ../shared)"
    exit 77
fi
T="$ML_TMP/eval_real"
rm -rf "$T"; mkdir -p "$T/cirr" "$T/fiq/images"
$PY tests/reference/make_checkpoint.py --size tiny --seed 31 --out "$T/m.pkl" > /dev/null
"$ML" convert --model "$T/m.pkl" --output "$T/m.mlens" --quiet
ln -s "$B/cirr/cap.rc2.val.json" "$B/cirr/split.rc2.val.json" "$T/cirr/"
ln -s "$B/fashioniq/cap.dress.val.json" "$B/fashioniq/split.dress.val.json" "$T/fiq/"
$PY - "$T" "$B" <<'PYEOF'
import hashlib, json, os, sys
from PIL import Image
T, B = sys.argv[1:]
def png(path, key):
    h = hashlib.md5(key.encode()).digest()
    im = Image.new("RGB", (16, 16), tuple(h[:3]))
    im.putpixel((h[3] % 16, h[4] % 16), tuple(h[5:8]))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.save(path)
for name, rel in json.load(open(f"{B}/cirr/split.rc2.val.json")).items():
    png(os.path.join(T, "cirr", rel), name)
for asin in json.load(open(f"{B}/fashioniq/split.dress.val.json")):
    png(f"{T}/fiq/images/{asin}.png", asin)
PYEOF
"$ML" eval cirr --data "$T/cirr" --model "$T/m.mlens" --output "$T/out-cirr" --json --quiet > "$T/cirr.json"
"$ML" eval fiq-dress --data "$T/fiq" --model "$T/m.mlens" --output "$T/out-fiq" --json --quiet > "$T/fiq.json"
$PY - "$T" "$B" <<'PYEOF'
import json, sys
T, B = sys.argv[1:]
def check(result, rankings, n_queries, n_gallery, targets_of, ks):
    r = json.load(open(result))
    (task,) = r["tasks"]
    assert task["queries"] == n_queries, (result, task["queries"], n_queries)
    assert task["gallery"] == n_gallery, (result, task["gallery"], n_gallery)
    assert task["scored"] == n_queries and task["unscored"] == 0 and not task["problems"], (result, task)
    assert task["gallery_missing"] == 0, (result, task)
    rows = [json.loads(l) for l in open(rankings)]
    assert len(rows) == n_queries, (rankings, len(rows))
    for k in ks:
        hit = sum(any(t in row["ranking"][:k] for t in targets_of(row)) for row in rows)
        want = 100.0 * hit / n_queries
        got = task["metrics"][f"R@{k}"]
        assert abs(got - want) < 1e-6, (result, k, got, want)
    print(f"{result.rsplit('/', 1)[1]}: {n_queries} queries, {n_gallery} gallery items, metrics {task['metrics']}")
    return rows
cirr = json.load(open(f"{B}/cirr/cap.rc2.val.json"))
target = {str(e["pairid"]): e["target_hard"] for e in cirr}
ref = {str(e["pairid"]): e["reference"] for e in cirr}
rows = check(f"{T}/cirr.json", f"{T}/out-cirr/rankings.jsonl", len(cirr),
             len(json.load(open(f"{B}/cirr/split.rc2.val.json"))), lambda r: [target[r["query"]]], (1, 5, 10, 50))
assert all(ref[r["query"]] not in r["ranking"] for r in rows), "CIRR rankings must leave out the reference image"
# Recall_subset@1: the target first among the query's own img_set members
members = {str(e["pairid"]): e["img_set"]["members"] for e in cirr}
for row in rows:
    others = set(members[row["query"]]) - {ref[row["query"]]}  # saved to depth 3
    assert set(row["subset_ranking"]) <= others and len(row["subset_ranking"]) == min(3, len(others)), row["query"]
want = 100.0 * sum(r["subset_ranking"][0] == target[r["query"]] for r in rows) / len(rows)
got = json.load(open(f"{T}/cirr.json"))["tasks"][0]["metrics"]["Rsubset@1"]
assert abs(got - want) < 1e-6, ("Rsubset@1", got, want)
fiq = json.load(open(f"{B}/fashioniq/cap.dress.val.json"))
check(f"{T}/fiq.json", f"{T}/out-fiq/rankings.jsonl", len(fiq),
      len(json.load(open(f"{B}/fashioniq/split.dress.val.json"))), lambda r: r["targets"], (10, 50))
PYEOF
echo "eval on real annotations OK"
