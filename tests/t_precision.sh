#!/usr/bin/env bash
# Every instruction-set path this machine supports (MAGICLENS_ISA) at every
# precision against the float64 reference: fp32 cosine >= 0.99999 and max
# abs diff <= 1e-4, bf16 cosine >= 0.999, int8 cosine >= 0.995.  Plus a
# retrieval check: int8 and bf16 top-10 results overlap fp32's >= 0.9.
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
T="$ML_TMP/precision"
rm -rf "$T"; mkdir -p "$T"
$PY tests/reference/make_images.py "$T/img" --no-expected > /dev/null
$PY tests/reference/make_checkpoint.py --size tiny --seed 21 --out "$T/m.pkl" > /dev/null
"$ML" convert --model "$T/m.pkl" --output "$T/m.mlens" --quiet
$PY - "$T" <<'PYEOF'
import json, sys
T = sys.argv[1]
good = open(f"{T}/img/good.txt").read().split()
texts = ["", "inside view of this building", "the same dish but raw", "a cartoon of it"]
with open(f"{T}/items.jsonl", "w") as f:
    for i, g in enumerate(good):
        f.write(json.dumps({"id": i, "image": "img/" + g, "text": texts[i % 4]}) + "\n")
with open(f"{T}/gallery.jsonl", "w") as f:
    for i, g in enumerate(good):
        f.write(json.dumps({"id": i, "image": "img/" + g}) + "\n")
with open(f"{T}/queries.jsonl", "w") as f:
    for i, g in enumerate(good[:16]):
        f.write(json.dumps({"id": i, "image": "img/" + g, "text": texts[1 + i % 3]}) + "\n")
PYEOF
$PY tests/reference/ref_embed.py --model "$T/m.pkl" --input "$T/items.jsonl" --output "$T/ref.npy" > /dev/null 2>&1
isas=$("$ML" cpu | $PY -c "import json,sys; print(' '.join(json.load(sys.stdin)['isa_supported']))")
# ML_TEST_ISAS (scripts/test-aarch64.sh: which paths each emulated CPU runs) narrows the list.
[ -n "${ML_TEST_ISAS:-}" ] && isas=$(for i in $isas; do case " $ML_TEST_ISAS " in *" $i "*) printf '%s ' "$i";; esac; done)
echo "instruction sets: $isas"
for isa in $isas; do
    for p in fp32 bf16 int8; do
        case $p in fp32) lim="--min-cos 0.99999 --max-abs 1e-4";; bf16) lim="--min-cos 0.999 --max-abs 1";; int8) lim="--min-cos 0.995 --max-abs 1";; esac
        MAGICLENS_ISA=$isa "$ML" embed --model "$T/m.mlens" --precision $p --input "$T/items.jsonl" --output "$T/$isa-$p.npy" --quiet
        echo "== $isa $p: $($PY tests/reference/compare_npy.py "$T/$isa-$p.npy" "$T/ref.npy" $lim | tail -1)"
        $PY tests/reference/compare_npy.py "$T/$isa-$p.npy" "$T/ref.npy" $lim > /dev/null
    done
done
# Where the CPU has AVX-VNNI, the avx2 int8 run above used it: the AVX2
# u8 x s7 kernel (CPUs without it; 7-bit weights) is checked too.
if echo " $isas " | grep -q " avx2 "; then
    if "$ML" cpu | grep -q '"avx_vnni": true'; then
        MAGICLENS_AVXVNNI=0 MAGICLENS_ISA=avx2 "$ML" embed --model "$T/m.mlens" --precision int8 --input "$T/items.jsonl" --output "$T/avx2-u8s7.npy" --quiet
        echo "== avx2 int8 without AVX-VNNI: $($PY tests/reference/compare_npy.py "$T/avx2-u8s7.npy" "$T/ref.npy" --min-cos 0.995 --max-abs 1 | tail -1)"
        $PY tests/reference/compare_npy.py "$T/avx2-u8s7.npy" "$T/ref.npy" --min-cos 0.995 --max-abs 1 > /dev/null
        MAGICLENS_AVXVNNI=0 MAGICLENS_ISA=avx2 "$ML" cpu | grep -q '"int8": "avx2-u8s7"'
    fi
fi
# Where the CPU has AVX512-BF16, the avx512 bf16 run above used its default
# (vdpbf16ps on AMD, the weights widened into the float32 kernel on Intel):
# the other kernel is checked too, and each must be the one `cpu` names.
if "$ML" cpu | grep -q '"avx512_bf16": true' && echo " $isas " | grep -q " avx512 "; then
    dot=$("$ML" cpu | $PY -c "import json,sys; print(int(json.load(sys.stdin)['bf16_dot']))")
    alt=$((1 - dot)); want=$([ $alt = 1 ] && echo avx512-bf16 || echo avx512-bf16w)
    MAGICLENS_BF16DOT=$alt MAGICLENS_ISA=avx512 "$ML" cpu | grep -q "\"bf16\": \"$want\""
    MAGICLENS_BF16DOT=$alt MAGICLENS_ISA=avx512 "$ML" embed --model "$T/m.mlens" --precision bf16 --input "$T/items.jsonl" --output "$T/avx512-bf16-alt.npy" --quiet
    echo "== avx512 bf16 on $want: $($PY tests/reference/compare_npy.py "$T/avx512-bf16-alt.npy" "$T/ref.npy" --min-cos 0.999 --max-abs 1 | tail -1)"
    $PY tests/reference/compare_npy.py "$T/avx512-bf16-alt.npy" "$T/ref.npy" --min-cos 0.999 --max-abs 1 > /dev/null
fi
# auto's choice and reason; no precision may name a scalar kernel on a SIMD path.
if echo " $isas " | grep -q " avx2 "; then
    for isa in $isas; do
        # auto names its choice and why; off bf16 hardware it is fp32 (int8's bound is below auto's)
        MAGICLENS_ISA=$isa "$ML" cpu | $PY -c "import json,sys; c=json.load(sys.stdin); assert c['precision_auto_why'].startswith(c['precision_auto'] + ':'), c; assert c['precision_auto'] != 'int8', c"
        [ "$isa" = scalar ] && continue
        if MAGICLENS_ISA=$isa "$ML" cpu | grep -q '"[a-z0-9]*": "scalar-'; then
            echo "$isa: a precision runs the scalar kernels: $(MAGICLENS_ISA=$isa "$ML" cpu)"; exit 1
        fi
    done
fi
# A real AVX2-only CPU, as far as software can tell: bench/cpuid_mask.c makes
# CPUID hide AVX-512 (and AVX-VNNI) through Linux's CPUID faulting, so the
# run-time detection itself picks the AVX2 kernels (no MAGICLENS_ISA).  Its
# embeddings must equal the forced path's bit for bit.  Skipped (one line)
# where the CPU or kernel cannot make CPUID fault, or on a CPU without AVX2.
if echo " $isas " | grep -q " avx2 " && [ "$(uname -m)" = x86_64 ] &&
    ${CC:-cc} -O2 -shared -fPIC -o "$T/cpuid_mask.so" bench/cpuid_mask.c -ldl 2> "$T/cpuid_mask.log" &&
    LD_PRELOAD="$T/cpuid_mask.so" CPUID_MASK=avx2-novnni "$ML" cpu > "$T/cpu-masked.json" 2>> "$T/cpuid_mask.log"; then
    $PY - "$T/cpu-masked.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
assert c["isa_supported"] == ["scalar", "avx2"] and c["isa_active"] == "avx2", c
assert not c["avx_vnni"] and not c["avx512_vnni"] and not c["avx512_bf16"], c
assert c["gemm"] == {"fp32": "avx2-fp32", "bf16": "avx2-bf16w", "int8": "avx2-u8s7"}, c
assert c["precision_auto"] == "fp32", c
PYEOF
    for p in fp32 bf16 int8; do
        LD_PRELOAD="$T/cpuid_mask.so" CPUID_MASK=avx2-novnni "$ML" embed --model "$T/m.mlens" --precision $p \
            --input "$T/items.jsonl" --output "$T/masked-$p.npy" --quiet
        MAGICLENS_AVXVNNI=0 MAGICLENS_ISA=avx2 "$ML" embed --model "$T/m.mlens" --precision $p \
            --input "$T/items.jsonl" --output "$T/forced-$p.npy" --quiet
        cmp "$T/masked-$p.npy" "$T/forced-$p.npy" || { echo "AVX2-only CPU (masked) $p differs from MAGICLENS_ISA=avx2"; exit 1; }
    done
    echo "== AVX2-only CPU by CPUID masking: avx2 kernels chosen, fp32/bf16/int8 identical to the forced path"
else
    echo "(AVX2-only CPU by CPUID masking: not run here: $(tail -1 "$T/cpuid_mask.log" 2>/dev/null || echo 'no AVX2'))"
fi
# Patch 14 (as ViT-L/14): a patch row of 588 values, padded to 608 for the
# bf16 products; the padding must read as zero on every path.
$PY tests/reference/make_checkpoint.py --size tiny14 --seed 22 --out "$T/m14.pkl" > /dev/null
"$ML" convert --model "$T/m14.pkl" --output "$T/m14.mlens" --quiet
$PY tests/reference/ref_embed.py --model "$T/m14.pkl" --input "$T/items.jsonl" --output "$T/ref14.npy" > /dev/null 2>&1
for isa in $isas; do
    MAGICLENS_ISA=$isa "$ML" embed --model "$T/m14.mlens" --precision bf16 --input "$T/items.jsonl" --output "$T/$isa-14.npy" --quiet
    echo "== patch 14, $isa bf16: $($PY tests/reference/compare_npy.py "$T/$isa-14.npy" "$T/ref14.npy" --min-cos 0.999 --max-abs 1 | tail -1)"
    $PY tests/reference/compare_npy.py "$T/$isa-14.npy" "$T/ref14.npy" --min-cos 0.999 --max-abs 1 > /dev/null
done
# Retrieval: the low-precision rankings agree with fp32's on the best ISA.
for p in fp32 bf16 int8; do
    "$ML" embed --model "$T/m.mlens" --precision $p --input "$T/gallery.jsonl" --output "$T/g-$p.npy" --quiet
    "$ML" embed --model "$T/m.mlens" --precision $p --input "$T/queries.jsonl" --output "$T/q-$p.npy" --quiet
done
$PY - "$T" <<'PYEOF'
import sys
import numpy as np
T = sys.argv[1]
def top10(p):
    g, q = np.load(f"{T}/g-{p}.npy"), np.load(f"{T}/q-{p}.npy")
    return np.argsort(-(q @ g.T), axis=1)[:, :10]
ref = top10("fp32")
for p in ("bf16", "int8"):
    t = top10(p)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref, t)])
    print(f"top-10 overlap {p} vs fp32: {overlap:.3f}")
    assert overlap >= 0.9, (p, overlap)
PYEOF
echo "precision OK"
