#!/usr/bin/env bash
# The approximate structure (index --ann) inside the index: with every list
# probed it returns exactly the exact search's results; items added, changed
# or removed after it was built are still found / never returned.
set -euo pipefail
ML="$BUILD/magiclens"
T="$ML_TMP/index_ann"
rm -rf "$T"; mkdir -p "$T/g"
/usr/bin/python3 tests/reference/make_images.py "$T/fx" --no-expected > /dev/null
good=($(cat "$T/fx/good.txt"))
for f in "${good[@]:0:36}"; do cp "$T/fx/$f" "$T/g/"; done
/usr/bin/python3 tests/reference/make_checkpoint.py --size tiny --seed 17 --out "$T/m.pkl" > /dev/null
ix() { "$ML" "$@" --model "$T/m.pkl" --precision fp32 --quiet; }
ix index --images "$T/g" --output "$T/x.mlindex"
"$ML" index --output "$T/x.mlindex" --ann --nlist 4 --quiet
[ -s "$T/x.mlindex/ann.ivf" ] && [ -s "$T/x.mlindex/ann.ids" ] || { echo "no ANN files"; exit 1; }
q="$T/g/${good[0]}"
compare() {  # $1: label; the rest: query arguments
    local label="$1"; shift
    ix search --index "$T/x.mlindex" "$@" --json --nprobe 4 | sed 's/,"took_ms".*//' > "$T/ann"
    ix search --index "$T/x.mlindex" "$@" --json --exact | sed 's/,"took_ms".*//' > "$T/exact"
    cmp -s "$T/ann" "$T/exact" || { echo "$label: ANN and exact differ"; cat "$T/ann" "$T/exact"; exit 1; }
    [ "$(grep -o '"rank"' "$T/ann" | wc -l)" -ge 5 ] || { echo "$label: too few results"; exit 1; }
    echo "ok  $label"
}
compare "image+text" --image "$q" --text "red" -k 10
compare "all items" --image "$q" -k 100
# Changes after the ANN build: 2 removed, 1 changed, 3 added.
rm "$T/g/${good[1]}" "$T/g/${good[2]}"
cp "$T/fx/${good[40]}" "$T/g/${good[3]}"
for f in "${good[@]:41:3}"; do cp "$T/fx/$f" "$T/g/"; done
ix index --images "$T/g" --output "$T/x.mlindex"
compare "after changes" --image "$q" --text "red" -k 100
for gone in "${good[1]}" "${good[2]}"; do
    ! grep -q "/$gone\"" "$T/ann" || { echo "removed $gone returned"; exit 1; }
done
for f in "${good[@]:41:3}" "${good[3]}"; do
    grep -q "/$f\"" "$T/ann" || { echo "new or changed $f not found"; exit 1; }
done
[ "$(grep -o '"rank"' "$T/ann" | wc -l)" -eq 37 ] || { echo "expected all 37 items"; exit 1; }
compare "after changes, prefix" --image "$q" -k 20 --prefix "$(realpath "$T/g")/png"
echo "ok  removed items never returned, new ones found"
