#!/usr/bin/env bash
# The public index API (include/magiclens_index.h) on a fixture gallery with
# a tiny random model: test_index_api checks build / cancel / sync / add /
# remove / search / embeddings against expectations it computes itself, and
# here its search results and export must equal `magiclens search --json`
# and `magiclens export` for the same queries (the CLI is a client of it).
set -euo pipefail
T="$ML_TMP/index_api"
rm -rf "$T"; mkdir -p "$T/work"
/usr/bin/python3 tests/reference/make_images.py "$T/img" --no-expected > /dev/null
/usr/bin/python3 tests/reference/make_checkpoint.py --size tiny --seed 5 --out "$T/m.pkl" > /dev/null
Q="$T/img/$(head -n 1 "$T/img/good.txt")"
"$BUILD/tests/test_index_api" "$T/m.pkl" "$T/img/good.txt" "$Q" "$T/work"

ML="$BUILD/magiclens"
X="$T/work/a.mlindex"
PREFIX=$(sed -n 's/^PREFIX //p' "$T/work/api.json")
read -r L1 L2 < <(sed -n 's/^LIKE //p' "$T/work/api.json")
s() { "$ML" search --index "$X" --model "$T/m.pkl" --precision fp32 --json "$@" | sed 's/,"took_ms".*//'; }
{
    s --image "$Q" --text "the same chair in a living room" -k 10
    s --image "$Q" -k 5 --offset 2
    s --text "a photo of a dog" -k 8
    s --like "$L1" --text "make it red" -k 10
    s --image "$Q" --text "at night" -k 20 --min-score 0
    s --like "$L2"
    s --image "$Q" --text "in the snow" --prefix "$PREFIX"
} > "$T/cli.json"
grep -v '^PREFIX \|^LIKE ' "$T/work/api.json" > "$T/api.json"
cmp "$T/api.json" "$T/cli.json" || { echo "API and CLI searches differ"; diff "$T/api.json" "$T/cli.json" | head; exit 1; }
[ "$(grep -c '"rank":' "$T/cli.json")" -eq 7 ] || { echo "a query returned nothing"; exit 1; }
echo "ok  7 queries: API hits == magiclens search --json"

"$ML" export --index "$X" --output "$T/export-cli" --quiet
for f in embeddings.npy clip_embeddings.npy metadata.jsonl; do
    cmp "$T/work/export-api/$f" "$T/export-cli/$f" || { echo "export $f differs"; exit 1; }
done
echo "ok  ml_index_export == magiclens export"
