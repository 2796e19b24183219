#!/usr/bin/env bash
# MagicLens base, image path with the empty instruction: the C engine vs
# ONNX Runtime (onnxruntime-node 1.30.0, CPU execution provider), fp32 and
# dynamically quantised int8, in alternating rounds on this machine.
#
#   bench/vs_onnxruntime.sh [--seconds S] [--rounds R] [--isas "avx2 avx512"]
#                           [--out DIR] [--ref-items N] [--gallery N] [--queries N]
#                           [--skip-ref] [--batch B] [--threads N] [--no-torch]
#                           [--emulate avx2|avx2-novnni]
#
# --emulate: every engine (ORT, PyTorch, magiclens) runs as on a CPU without
# AVX-512 (avx2: Intel Alder Lake-like, AVX-VNNI kept where present;
# avx2-novnni: Zen 3 / Haswell-Skylake-like): bench/cpuid_mask.c, built into
# DIR, is preloaded and makes CPUID hide those features (Linux CPUID
# faulting).  ORT has no switch of its own to stay off AVX-512.  A stand-in
# for an AVX2-only CPU: the cores, caches and clocks are still this CPU's.
#
# Steps (each cached in DIR/model, so a second run with --out DIR skips them):
#   1. the random base checkpoint (seed 5), converted to .mlens;
#   2. bench/ort_export.py: torch.onnx export (opset 17) of bench/torch_model.py,
#      and its int8 twin quantised as quantize_dynamic does (DynamicQuantizeMatMul,
#      s8 weights, one scale per tensor); needs Debian python3-onnx + python3-torch;
#   3. onnxruntime-node@1.30.0 from npm with --ignore-scripts into the git-ignored
#      bench/.ort (its CPU binaries ship in the package);
#   4. R rounds, each: ORT fp32, ORT int8, PyTorch fp32 (bench/torch_bench.py,
#      OpenBLAS told its real core where it misreads Intel), then magiclens fp32 / bf16 / int8 on
#      every ISA of --isas (default: every SIMD path this CPU runs; where the CPU
#      has AVX-VNNI, avx2 int8 also without it: the u8 x s8 kernel), S seconds each;
#   5. accuracy: magiclens embeddings against the float64 reference (N gallery +
#      N query items) and the top-10 overlap of int8 / bf16 with fp32; ORT int8
#      against ORT fp32 (cosine on the timed batch);
#   6. DIR/table.md (printed): medians over the rounds and the paired ratios
#      (each round's magiclens rate over the same round's ORT rate, median).
# Quick check: --seconds 5 --rounds 1 --skip-ref.  Bench-only dependencies
# (python3-onnx, npm) are not needed by `make test`.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

SECS=20 ROUNDS=3 ISAS="" OUT="" REF_N=4 GAL_N=45 Q_N=16 SKIP_REF=0 BATCH=8 THREADS=2 NO_TORCH=0 EMULATE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECS=$2; shift ;;
        --rounds) ROUNDS=$2; shift ;;
        --isas) ISAS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --ref-items) REF_N=$2; shift ;;
        --gallery) GAL_N=$2; shift ;;
        --queries) Q_N=$2; shift ;;
        --skip-ref) SKIP_REF=1 ;;
        --batch) BATCH=$2; shift ;;
        --threads) THREADS=$2; shift ;;
        --no-torch) NO_TORCH=1 ;;
        --emulate) EMULATE=$2; shift ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        *) echo "vs_onnxruntime.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$OUT" ] || OUT=bench/out/vs_onnxruntime-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
PY=/usr/bin/python3
BIN=${MAGICLENS_BIN:-build/magiclens}
# the lookup every command uses (`magiclens vocab`: $MAGICLENS_VOCAB, models/, ../shared/assets/)
VOCAB=${MAGICLENS_VOCAB:-$("$BIN" vocab)}
ORT_VERSION=1.30.0
ORT_DIR=$ROOT/bench/.ort
RES=$OUT/results.jsonl
: > "$RES"
T_START=$(date +%s)
log() { printf '[%4ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
add() { echo "$1" >> "$RES"; }
json_set() { $PY -c 'import json,sys; o=json.loads(sys.argv[1] or "{}"); o[sys.argv[2]]=json.loads(sys.argv[3]); print(json.dumps(o))' "$1" "$2" "$3"; }
last_json() { grep '^{' "$1" 2>/dev/null | tail -1; }

[ -x "$BIN" ] || { echo "vs_onnxruntime.sh: $BIN not built (run make)" >&2; exit 1; }
[ -f "$VOCAB" ] || { echo "vs_onnxruntime.sh: vocabulary $VOCAB not found (set MAGICLENS_VOCAB)" >&2; exit 1; }
$PY -c 'import onnx, torch' 2>/dev/null || { echo "vs_onnxruntime.sh: needs Debian python3-onnx and python3-torch (scripts/install-deps.sh --bench)" >&2; exit 1; }
command -v node > /dev/null && command -v npm > /dev/null || { echo "vs_onnxruntime.sh: needs node and npm" >&2; exit 1; }

CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx_vnni|avx512f|avx512_vnni|avx512_bf16|amx_tile|amx_bf16|amx_int8)$' | tr '\n' ' ' | sed 's/ $//')
# EMU: the environment every timed and accuracy command runs under
EMU=""
if [ -n "$EMULATE" ]; then
    case "$EMULATE" in avx2|avx2-novnni) ;; *) echo "vs_onnxruntime.sh: --emulate avx2 or avx2-novnni" >&2; exit 2 ;; esac
    ${CC:-cc} -O2 -Wall -Wextra -Werror -shared -fPIC -o "$OUT/cpuid_mask.so" bench/cpuid_mask.c -ldl \
        || { echo "vs_onnxruntime.sh: could not build bench/cpuid_mask.c" >&2; exit 1; }
    EMU="LD_PRELOAD=$OUT/cpuid_mask.so CPUID_MASK=$EMULATE"
    if env $EMU "$BIN" cpu | grep -q '"avx512"'; then
        echo "vs_onnxruntime.sh: --emulate: magiclens still sees AVX-512 (no CPUID faulting here?)" >&2; exit 1
    fi
    FLAGS="$FLAGS; emulated: $EMULATE"
fi
CPUJ=$(env $EMU "$BIN" cpu)
[ -n "$ISAS" ] || ISAS=$(echo "$CPUJ" | $PY -c 'import json,sys; print(" ".join(i for i in json.load(sys.stdin)["isa_supported"] if i != "scalar"))')
AVXVNNI=$(echo "$CPUJ" | $PY -c 'import json,sys; print(int(json.load(sys.stdin).get("avx_vnni", False)))')
add "{\"key\": \"machine\", \"cpu\": \"$CPU\", \"flags\": \"$FLAGS\", \"emulate\": \"$EMULATE\", \"magiclens_cpu\": $CPUJ, \"nproc\": $(nproc), \"load_start\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"git\": \"$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty')\", \"seconds\": $SECS, \"rounds\": $ROUNDS, \"batch\": $BATCH, \"threads\": $THREADS, \"isas\": \"$ISAS\"}"
log "$CPU; flags: $FLAGS; ISAs: $ISAS; load $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- 1-3 models, ORT
M=$OUT/model
mkdir -p "$M"
if [ ! -s "$M/base.pkl" ]; then
    log "random base checkpoint (seed 5)"
    $PY tests/reference/make_checkpoint.py --size base --seed 5 --out "$M/base.pkl" > "$OUT/logs/make_checkpoint.log" 2>&1 \
        || { echo "make_checkpoint failed: see $OUT/logs/make_checkpoint.log" >&2; exit 1; }
fi
if [ ! -s "$M/base.mlens" ]; then
    "$BIN" convert --model "$M/base.pkl" --vocab "$VOCAB" --output "$M/base.mlens" > "$OUT/logs/convert.log" 2>&1 \
        || { echo "convert failed: see $OUT/logs/convert.log" >&2; exit 1; }
fi
if [ ! -s "$M/fp32.onnx" ] || [ ! -s "$M/int8.onnx" ]; then
    log "ONNX export + dynamic int8 quantisation (~3 min)"
    $PY bench/ort_export.py --model "$M/base.pkl" --fp32 "$M/fp32.onnx" --int8 "$M/int8.onnx" --batch "$BATCH" \
        > "$OUT/logs/ort_export.log" 2>&1 || { echo "ONNX export failed: see $OUT/logs/ort_export.log" >&2; exit 1; }
fi
j=$(last_json "$OUT/logs/ort_export.log")
[ -n "$j" ] && add "$(json_set "$j" key '"onnx"')"
if [ "$($PY -c 'import json,sys; print(json.load(open(sys.argv[1])).get("version",""))' "$ORT_DIR/node_modules/onnxruntime-node/package.json" 2>/dev/null)" != "$ORT_VERSION" ]; then
    log "npm install onnxruntime-node@$ORT_VERSION --ignore-scripts into bench/.ort"
    mkdir -p "$ORT_DIR"
    npm install --ignore-scripts --no-save --no-audit --no-fund --prefix "$ORT_DIR" "onnxruntime-node@$ORT_VERSION" \
        > "$OUT/logs/npm.log" 2>&1 || { echo "npm install failed: see $OUT/logs/npm.log" >&2; exit 1; }
fi

# ---------------------------------------------------------------- 4 timed rounds
ort_run() { # key model [compare]
    local key=$1 model=$2 cmp=${3:-} extra=""
    [ -n "$cmp" ] && extra="--compare $cmp"
    log "  ORT $key"
    if env $EMU node bench/ort_bench.js "$model" --threads "$THREADS" --batch "$BATCH" --seconds "$SECS" $extra \
            > "$OUT/logs/$key-r$r.log" 2>&1 && [ -n "$(last_json "$OUT/logs/$key-r$r.log")" ]; then
        add "$(json_set "$(json_set "$(last_json "$OUT/logs/$key-r$r.log")" key "\"$key\"")" round "$r")"
    else
        log "  ORT $key failed: see $OUT/logs/$key-r$r.log"
    fi
}
c_run() { # key precision isa [env...]
    local key=$1 prec=$2 isa=$3
    shift 3
    log "  magiclens $key"
    if env $EMU MAGICLENS_ISA="$isa" "$@" "$BIN" bench --model "$M/base.mlens" --precision "$prec" --batch "$BATCH" \
            --threads "$THREADS" --seconds "$SECS" > "$OUT/logs/$key-r$r.log" 2>&1 \
            && [ -n "$(last_json "$OUT/logs/$key-r$r.log")" ]; then
        add "$(json_set "$(json_set "$(last_json "$OUT/logs/$key-r$r.log")" key "\"$key\"")" round "$r")"
    else
        log "  magiclens $key failed: see $OUT/logs/$key-r$r.log"
    fi
}
# OpenBLAS reads recent Intel CPUs as Prescott: tell it the real core
# (under --emulate, the AVX2 one the engines see).
# Debian's python3-torch takes whichever libblas.so.3 is selected (the
# netlib reference one by default); OpenBLAS (scripts/install-deps.sh
# --bench) is put first explicitly.
TORCH_ENV=""
OBDIR=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/openblas-pthread
[ -f "$OBDIR/libblas.so.3" ] && TORCH_ENV="LD_LIBRARY_PATH=$OBDIR"
if [ -n "$EMULATE" ]; then TORCH_ENV="$TORCH_ENV OPENBLAS_CORETYPE=Haswell"
elif grep -q GenuineIntel /proc/cpuinfo && grep -qw avx512f /proc/cpuinfo; then TORCH_ENV="$TORCH_ENV OPENBLAS_CORETYPE=SkylakeX"
fi
torch_run() {
    log "  PyTorch fp32 ($TORCH_ENV)"
    if env $EMU $TORCH_ENV $PY bench/torch_bench.py --model "$M/base.pkl" --batch "$BATCH" --threads "$THREADS" \
            --seconds "$SECS" > "$OUT/logs/torch_fp32-r$r.log" 2>&1 && [ -n "$(last_json "$OUT/logs/torch_fp32-r$r.log")" ]; then
        add "$(json_set "$(json_set "$(last_json "$OUT/logs/torch_fp32-r$r.log")" key '"torch_fp32"')" round "$r")"
    else
        log "  PyTorch fp32 failed: see $OUT/logs/torch_fp32-r$r.log"
    fi
}
for r in $(seq 1 "$ROUNDS"); do
    log "round $r of $ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    ort_run ort_fp32 "$M/fp32.onnx"
    ort_run ort_int8 "$M/int8.onnx" "$( [ "$r" = 1 ] && echo "$M/fp32.onnx")"
    [ $NO_TORCH = 1 ] || torch_run
    for isa in $ISAS; do
        for p in fp32 bf16 int8; do c_run "c_${isa}_$p" $p "$isa"; done
        [ "$AVXVNNI" = 1 ] && [ "$isa" = avx2 ] && c_run "c_avx2_int8_novnni" int8 avx2 MAGICLENS_AVXVNNI=0
    done
done

# ---------------------------------------------------------------- 5 accuracy
FX=$OUT/fixtures
[ -s "$FX/good.txt" ] || $PY tests/reference/make_images.py "$FX" --no-expected > "$OUT/logs/make_images.log" 2>&1
$PY bench/vs_report.py items "$FX" "$OUT" "$REF_N" "$GAL_N" "$Q_N"
# The cached reference is reused only for the same item list (a run with
# another --ref-items wrote a different acc.jsonl).
if [ -s "$OUT/acc_ref.npy" ] && ! cmp -s "$OUT/acc.jsonl" "$OUT/acc_ref.items"; then rm -f "$OUT/acc_ref.npy"; fi
if [ $SKIP_REF = 0 ] && [ ! -s "$OUT/acc_ref.npy" ]; then
    cp "$OUT/acc.jsonl" "$OUT/acc_ref.items"
    log "float64 reference on $(wc -l < "$OUT/acc.jsonl") items (~9 s each)"
    $PY tests/reference/ref_embed.py --model "$M/base.pkl" --input "$OUT/acc.jsonl" --output "$OUT/acc_ref.npy" \
        --vocab "$VOCAB" --threads "$THREADS" > "$OUT/logs/ref_embed.log" 2>&1 || log "  reference failed: see logs/ref_embed.log"
fi
embed() { # isa prec input output [env...]
    local isa=$1 p=$2 in=$3 o=$4
    shift 4
    env $EMU MAGICLENS_ISA="$isa" "$@" "$BIN" embed --model "$M/base.mlens" --vocab "$VOCAB" --precision "$p" --batch "$BATCH" \
        --threads "$THREADS" --quiet --input "$in" --output "$o" > "$OUT/logs/embed-$(basename "$o").log" 2>&1
}
for isa in $ISAS; do
    variants="fp32 bf16 int8"
    [ "$AVXVNNI" = 1 ] && [ "$isa" = avx2 ] && variants="$variants int8_novnni"
    for v in $variants; do
        p=${v%_novnni}; e=""
        [ "$v" != "$p" ] && e="MAGICLENS_AVXVNNI=0"
        log "accuracy: magiclens $isa $v"
        if [ -s "$OUT/acc_ref.npy" ] && embed "$isa" "$p" "$OUT/acc.jsonl" "$OUT/acc_${isa}_$v.npy" $e; then
            add "$(json_set "$($PY bench/vs_report.py cosine "$OUT/acc_${isa}_$v.npy" "$OUT/acc_ref.npy" "$OUT/acc.jsonl")" key "\"acc_c_${isa}_$v\"")"
        fi
        embed "$isa" "$p" "$OUT/gallery.jsonl" "$OUT/gal_${isa}_$v.npy" $e && embed "$isa" "$p" "$OUT/queries.jsonl" "$OUT/q_${isa}_$v.npy" $e
    done
    for v in $variants; do
        [ "$v" = fp32 ] && continue
        [ -s "$OUT/gal_${isa}_$v.npy" ] && [ -s "$OUT/gal_${isa}_fp32.npy" ] && \
            add "$(json_set "$($PY bench/vs_report.py overlap "$OUT/gal_${isa}_fp32.npy" "$OUT/q_${isa}_fp32.npy" "$OUT/gal_${isa}_$v.npy" "$OUT/q_${isa}_$v.npy" 10)" key "\"overlap_c_${isa}_$v\"")"
    done
done

# ---------------------------------------------------------------- 6 table
add "{\"key\": \"end\", \"load_end\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"wall_s\": $(( $(date +%s) - T_START ))}"
$PY bench/ort_report.py "$RES" | tee "$OUT/table.md"
log "done: $OUT/table.md, $RES"
