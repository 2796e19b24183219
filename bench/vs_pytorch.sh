#!/usr/bin/env bash
# MagicLens base, image path: the C engine vs PyTorch, side by side on this machine.
#
#   bench/vs_pytorch.sh [--seconds S] [--out DIR] [--ref-items N] [--gallery N]
#                       [--queries N] [--e2e-images N] [--with-scalar] [--skip-ref]
#                       [--rounds R]
#
# After the main pass, R paired rounds (default 3) re-time the fastest PyTorch
# fp32 and bf16 variants and the C engine back to back, so that the ratios
# the targets are judged on (the median over the main pass and the rounds)
# do not depend on the machine's drift between two runs minutes apart.
#
# Writes DIR/table.md (also printed), DIR/results.jsonl (every raw number) and
# DIR/logs/.  See bench/README.md.  Environment: MAGICLENS_BIN (default
# build/magiclens), MAGICLENS_VOCAB (default: what `magiclens vocab` finds),
# MAGICLENS_BENCH_CACHE (where a private OpenBLAS is unpacked when none is installed).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

SECS=20 OUT="" REF_N=8 GAL_N=45 Q_N=16 E2E_N=64 WITH_SCALAR=0 SKIP_REF=0 ROUNDS=3
BATCH=8 THREADS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --ref-items) REF_N=$2; shift ;;
        --gallery) GAL_N=$2; shift ;;
        --queries) Q_N=$2; shift ;;
        --e2e-images) E2E_N=$2; shift ;;
        --with-scalar) WITH_SCALAR=1 ;;
        --skip-ref) SKIP_REF=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "vs_pytorch.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$OUT" ] || OUT=bench/out/vs_pytorch-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
PY=/usr/bin/python3
BIN=${MAGICLENS_BIN:-build/magiclens}
# the lookup every command uses (`magiclens vocab`: $MAGICLENS_VOCAB, models/, ../shared/assets/)
VOCAB=${MAGICLENS_VOCAB:-$("$BIN" vocab)}
REP="$PY bench/vs_report.py"
RES=$OUT/results.jsonl
: > "$RES"
T_START=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log() { printf '[%4ds] %s\n' $(( $(date +%s) - T_START )) "$*" >&2; }
add() { echo "$1" >> "$RES"; }                       # one JSON object a line
# json_set '{"a":1}' key value_json  -> adds "key": value to an object
json_set() { $PY -c 'import json,sys; o=json.loads(sys.argv[1] or "{}"); o[sys.argv[2]]=json.loads(sys.argv[3]); print(json.dumps(o))' "$1" "$2" "$3"; }
last_json() { grep '^{' "$1" 2>/dev/null | tail -1; }

[ -x "$BIN" ] || { echo "vs_pytorch.sh: $BIN not built (run make)" >&2; exit 1; }
[ -f "$VOCAB" ] || { echo "vs_pytorch.sh: vocabulary $VOCAB not found (set MAGICLENS_VOCAB)" >&2; exit 1; }

# ---------------------------------------------------------------- machine
CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
NCPU=$(nproc)
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512f|avx512bw|avx512_vnni|avx512_bf16|avx512_fp16|amx_tile|amx_bf16|amx_int8)$' | tr '\n' ' ' | sed 's/ $//')
GIT="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' + uncommitted changes')"
SYSBLAS=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo '?')
case "$SYSBLAS" in *openblas*) SYSB=OpenBLAS ;; *blis*) SYSB=BLIS ;; */blas/*) SYSB="netlib reference BLAS" ;; *) SYSB=$SYSBLAS ;; esac

# OpenBLAS for the PyTorch fp32 runs: the installed one, else a private copy
# unpacked from the Debian package (no system change), else none.
OBDIR=""
for d in /usr/lib/x86_64-linux-gnu/openblas-pthread /usr/lib/x86_64-linux-gnu/openblas-openmp; do
    [ -f "$d/libblas.so.3" ] && { OBDIR=$d; break; }
done
if [ -z "$OBDIR" ]; then
    CACHE=${MAGICLENS_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/magiclens-bench}
    d=$CACHE/openblas/usr/lib/x86_64-linux-gnu/openblas-pthread
    if [ ! -f "$d/libblas.so.3" ]; then
        log "no OpenBLAS installed: unpacking Debian's libopenblas0-pthread into $CACHE (apt-get download)"
        mkdir -p "$CACHE/dl" && (cd "$CACHE/dl" && apt-get download libopenblas0-pthread >/dev/null 2>&1 \
            && dpkg-deb -x libopenblas0-pthread_*.deb "$CACHE/openblas") || true
    fi
    [ -f "$d/libblas.so.3" ] && OBDIR=$d
fi
OBVER=n/a
[ -n "$OBDIR" ] && OBVER="$OBDIR ($(ls "$OBDIR" | sed -n 's/^libopenblas.*-r\(.*\)\.so$/\1/p' | head -1))"
# which core OpenBLAS picks by itself on this CPU
OBCORE=n/a
if [ -n "$OBDIR" ]; then
    OBCORE=$(LD_LIBRARY_PATH=$OBDIR OPENBLAS_VERBOSE=2 $PY -c 'import torch; a=torch.ones(64,64); a@a' 2>&1 \
             | sed -n 's/^Core: *//p' | head -1)
    [ -n "$OBCORE" ] || OBCORE='?'
fi
TORCHV=$($PY -c 'import torch; print(torch.__version__)' 2>/dev/null)
log "machine: $CPU, $NCPU CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); system BLAS: $SYSB; OpenBLAS: $OBVER, core $OBCORE"

# ---------------------------------------------------------------- (a) model
M=$OUT/model
mkdir -p "$M"
if [ ! -s "$M/base.pkl" ]; then
    log "generating the random base checkpoint (seed 5)"
    $PY tests/reference/make_checkpoint.py --size base --seed 5 --out "$M/base.pkl" > "$OUT/logs/make_checkpoint.log" 2>&1 \
        || { echo "make_checkpoint failed: see $OUT/logs/make_checkpoint.log" >&2; exit 1; }
fi
if [ ! -s "$M/base.mlens" ]; then
    "$BIN" convert --model "$M/base.pkl" --vocab "$VOCAB" --output "$M/base.mlens" > "$OUT/logs/convert.log" 2>&1 \
        || { echo "convert failed: see $OUT/logs/convert.log" >&2; exit 1; }
fi
WBYTES=$(stat -c %s "$M/base.mlens")

# ---------------------------------------------------------------- (b) timings
TENV="OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS BLIS_NUM_THREADS=$THREADS"
declare -A T_ENV T_ARGS  # how each PyTorch variant ran (for the paired rounds)
torch_run() {  # key, extra env, args...
    local key=$1 envs=$2; shift 2
    T_ENV[$key]=$envs T_ARGS[$key]="$*"
    log "PyTorch $key"
    if env $TENV $envs $PY bench/torch_bench.py --model "$M/base.pkl" --batch $BATCH --threads $THREADS \
            --seconds "$SECS" "$@" > "$OUT/logs/$key.log" 2>&1 && [ -n "$(last_json "$OUT/logs/$key.log")" ]; then
        add "$(json_set "$(last_json "$OUT/logs/$key.log")" key "\"$key\"")"
    else
        log "  $key failed (n/a): see $OUT/logs/$key.log"
        add "{\"key\": \"$key\", \"images_per_s\": null}"
    fi
}
torch_run torch_fp32_system "" --dtype float32
if [ -n "$OBDIR" ]; then
    torch_run torch_fp32_openblas "LD_LIBRARY_PATH=$OBDIR" --dtype float32
    torch_run torch_fp32_openblas_skx "LD_LIBRARY_PATH=$OBDIR OPENBLAS_CORETYPE=SkylakeX" --dtype float32
fi
# bf16 (oneDNN); the verbose log of a short run shows the ISA / AMX use
torch_run torch_bf16 "" --dtype bfloat16
torch_run torch_bf16_autocast "" --dtype bfloat16 --autocast
ONEDNN=$(env $TENV ONEDNN_VERBOSE=1 DNNL_VERBOSE=1 $PY bench/torch_bench.py --model "$M/base.pkl" --dtype bfloat16 \
           --batch $BATCH --threads $THREADS --seconds 0 --warmup 0 2>&1 | tee "$OUT/logs/onednn_verbose.log" \
         | awk -F, '/verbose,info,cpu,isa/ {isa=$NF} /verbose,exec,cpu,matmul/ {mm[$5]++} /verbose,exec,cpu,inner_product/ {mm[$5]++}
                    END {s=isa; for (k in mm) s=s "; matmul impl " k " x" mm[k]; print s}')

SUPPORTED=$("$BIN" cpu 2>/dev/null | $PY -c 'import json,sys; print(" ".join(json.load(sys.stdin)["isa_supported"]))' 2>/dev/null)
ACTIVE=$("$BIN" cpu 2>/dev/null | $PY -c 'import json,sys; print(json.load(sys.stdin)["isa_active"])' 2>/dev/null)
c_run() {  # key, precision, isa ("" = default)
    local key=$1 prec=$2 isa=$3 e=""
    [ -n "$isa" ] && e="MAGICLENS_ISA=$isa"
    log "C $prec ${isa:-default isa}"
    if env $e "$BIN" bench --model "$M/base.mlens" --precision "$prec" --batch $BATCH --threads $THREADS \
            --seconds "$SECS" > "$OUT/logs/$key.log" 2>&1 && [ -n "$(last_json "$OUT/logs/$key.log")" ]; then
        local j; j=$(last_json "$OUT/logs/$key.log")
        j=$(json_set "$j" key "\"$key\""); j=$(json_set "$j" precision_req "\"$prec\"")
        j=$(json_set "$j" isa_req "\"${isa:-default}\""); j=$(json_set "$j" default_isa "$([ -z "$isa" ] && echo true || echo false)")
        add "$j"
    else
        log "  C $prec ${isa:-default} failed (n/a): see $OUT/logs/$key.log"
        add "{\"key\": \"$key\", \"images_per_s\": null, \"precision_req\": \"$prec\", \"isa_req\": \"${isa:-default}\", \"isa\": \"${isa:-$ACTIVE}\", \"default_isa\": $([ -z "$isa" ] && echo true || echo false)}"
    fi
}
c_run c_1_fp32 fp32 ""
for isa in $SUPPORTED; do
    [ "$isa" = "$ACTIVE" ] && continue
    [ "$isa" = scalar ] && [ $WITH_SCALAR = 0 ] && continue
    c_run "c_2_fp32_$isa" fp32 "$isa"
done
c_run c_3_bf16 bf16 ""
c_run c_4_int8 int8 ""
c_ok() { grep "\"key\": \"$1\"" "$RES" | grep -q '"images_per_s": [0-9]'; }

# paired rounds: the fastest PyTorch variant of each precision, then the C
# engine at that precision, right after each other
best_torch() {  # key prefix -> the key with the highest rate
    grep "\"key\": \"$1" "$RES" | $PY -c 'import json,sys
rows=[json.loads(l) for l in sys.stdin]; rows=[r for r in rows if r.get("images_per_s")]
print(max(rows, key=lambda r: r["images_per_s"])["key"] if rows else "")'
}
BEST_T_FP32=$(best_torch torch_fp32) BEST_T_BF16=$(best_torch torch_bf16)
for r in $(seq 1 "$ROUNDS"); do
    for pair in "bf16 $BEST_T_BF16" "fp32 $BEST_T_FP32"; do
        set -- $pair
        p=$1 tk=${2:-}
        [ -n "$tk" ] || continue
        log "round $r/$ROUNDS: PyTorch $tk, then C $p"
        env $TENV ${T_ENV[$tk]} $PY bench/torch_bench.py --model "$M/base.pkl" --batch $BATCH --threads $THREADS \
            --seconds "$SECS" ${T_ARGS[$tk]} > "$OUT/logs/round${r}_$tk.log" 2>&1
        tj=$(last_json "$OUT/logs/round${r}_$tk.log")
        "$BIN" bench --model "$M/base.mlens" --precision "$p" --batch $BATCH --threads $THREADS \
            --seconds "$SECS" > "$OUT/logs/round${r}_c_$p.log" 2>&1
        cj=$(last_json "$OUT/logs/round${r}_c_$p.log")
        [ -n "$tj" ] && [ -n "$cj" ] || { log "  round $r $p failed: see logs/round${r}_*"; continue; }
        add "$($PY -c 'import json,sys; t=json.loads(sys.argv[1]); c=json.loads(sys.argv[2])
print(json.dumps({"key":"round_%s_%s"%(sys.argv[3],sys.argv[4]),"round":int(sys.argv[3]),"precision":sys.argv[4],
"torch_key":sys.argv[5],"torch":t["images_per_s"],"c":c["images_per_s"],"ratio":c["images_per_s"]/t["images_per_s"]}))' \
            "$tj" "$cj" "$r" "$p" "$tk")"
    done
done
c_rate() { grep "\"key\": \"$1\"" "$RES" | $PY -c 'import json,sys; print(json.loads(sys.stdin.readline())["images_per_s"])'; }
PRECS=""
for p in fp32 bf16 int8; do
    k=$(case $p in fp32) echo c_1_fp32 ;; bf16) echo c_3_bf16 ;; int8) echo c_4_int8 ;; esac)
    c_ok "$k" && PRECS="$PRECS $p"
done

# ---------------------------------------------------------------- (c) accuracy
FX=$OUT/fixtures
if [ ! -s "$FX/good.txt" ]; then
    $PY tests/reference/make_images.py "$FX" --no-expected > "$OUT/logs/make_images.log" 2>&1
fi
$REP items "$FX" "$OUT" "$REF_N" "$GAL_N" "$Q_N"
if [ $SKIP_REF = 0 ]; then
    log "float64 reference on $(wc -l < "$OUT/acc.jsonl") items (~9 s each)"
    $PY tests/reference/ref_embed.py --model "$M/base.pkl" --input "$OUT/acc.jsonl" --output "$OUT/acc_ref.npy" \
        --vocab "$VOCAB" --threads $THREADS > "$OUT/logs/ref_embed.log" 2>&1 || log "  reference failed: see logs/ref_embed.log"
fi
for p in $PRECS; do
    "$BIN" embed --model "$M/base.mlens" --vocab "$VOCAB" --precision $p --batch $BATCH --threads $THREADS --quiet \
        --input "$OUT/acc.jsonl" --output "$OUT/acc_$p.npy" > "$OUT/logs/acc_$p.log" 2>&1
    if [ -s "$OUT/acc_ref.npy" ] && [ -s "$OUT/acc_$p.npy" ]; then
        add "$(json_set "$($REP cosine "$OUT/acc_$p.npy" "$OUT/acc_ref.npy" "$OUT/acc.jsonl")" key "\"acc_$p\"")"
    fi
done
if [ -s "$OUT/acc_ref.npy" ]; then
    log "PyTorch accuracy (gallery items)"
    j=$(env $TENV $REP torch-acc "$M/base.pkl" "$OUT/acc.jsonl" "$OUT/acc_ref.npy" 2> "$OUT/logs/torch_acc.log" | tail -1)
    [ -n "$j" ] && add "$(json_set "$j" key '"torch_acc"')"
fi

# ---------------------------------------------------------------- (d)+(e) retrieval, memory
for p in $PRECS; do
    log "C embed gallery + queries at $p (peak RSS)"
    /usr/bin/time -v "$BIN" embed --model "$M/base.mlens" --vocab "$VOCAB" --precision $p --batch $BATCH \
        --threads $THREADS --quiet --input "$OUT/gallery.jsonl" --output "$OUT/gal_$p.npy" > "$OUT/logs/gal_$p.log" 2>&1
    kb=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$OUT/logs/gal_$p.log")
    add "{\"key\": \"rss_$p\", \"max_rss_kb\": ${kb:-null}, \"weights_bytes\": $WBYTES}"
    "$BIN" embed --model "$M/base.mlens" --vocab "$VOCAB" --precision $p --batch $BATCH --threads $THREADS --quiet \
        --input "$OUT/queries.jsonl" --output "$OUT/q_$p.npy" > "$OUT/logs/q_$p.log" 2>&1
done
for p in bf16 int8; do
    if [ -s "$OUT/gal_fp32.npy" ] && [ -s "$OUT/gal_$p.npy" ] && [ -s "$OUT/q_$p.npy" ]; then
        add "$(json_set "$($REP overlap "$OUT/gal_fp32.npy" "$OUT/q_fp32.npy" "$OUT/gal_$p.npy" "$OUT/q_$p.npy" 10)" key "\"overlap_$p\"")"
    fi
done

# ---------------------------------------------------------------- (f) end to end
E2E=$OUT/jpegs
$REP jpegs "$E2E" "$E2E_N"
for p in $PRECS; do
    log "end to end: embed $E2E_N JPEGs at $p (+ model-only bench right before, same load)"
    # the model-only rate is re-measured next to the end-to-end run: on a shared
    # machine the rate from section (b) may have been taken under another load
    "$BIN" bench --model "$M/base.mlens" --precision $p --batch $BATCH --threads $THREADS \
        --seconds $(( (SECS + 1) / 2 )) > "$OUT/logs/e2e_bench_$p.log" 2>&1
    mo=$(last_json "$OUT/logs/e2e_bench_$p.log" | $PY -c 'import json,sys; print(json.load(sys.stdin)["images_per_s"])' 2>/dev/null)
    t0=$(date +%s.%N)
    "$BIN" embed --model "$M/base.mlens" --vocab "$VOCAB" --precision $p --batch $BATCH --threads $THREADS --quiet \
        --input "$E2E/first8.jsonl" --output "$OUT/e2e8_$p.npy" > "$OUT/logs/e2e8_$p.log" 2>&1
    t1=$(date +%s.%N)
    "$BIN" embed --model "$M/base.mlens" --vocab "$VOCAB" --precision $p --batch $BATCH --threads $THREADS --quiet \
        --input "$E2E/all.jsonl" --output "$OUT/e2e_$p.npy" > "$OUT/logs/e2e_$p.log" 2>&1
    rc=$?
    t2=$(date +%s.%N)
    k=$(case $p in fp32) echo c_1_fp32 ;; bf16) echo c_3_bf16 ;; int8) echo c_4_int8 ;; esac)
    add "$($PY -c 'import json,sys; t0,t1,t2,n,mo,rc=map(float,sys.argv[1:7]); n=int(n)
m=(n-8)/(t2-t0-2*(t1-t0)) if n>8 and t2-t0>2*(t1-t0) else None
print(json.dumps({"key":"e2e_'$p'","n":n,"rate_total":n/(t2-t1) if rc==0 else None,"rate_marginal":m if rc==0 else None,
"wall_8":t1-t0,"wall_n":t2-t1,"model_only":mo}))' "$t0" "$t1" "$t2" "$E2E_N" "${mo:-$(c_rate $k)}" "$rc")"
done

# ---------------------------------------------------------------- table
SB_SHORT=$SYSB
add "$($PY -c 'import json,sys; k=["date","cpu","ncpu","isa_flags","loadavg","git","bin","torch","system_blas","system_blas_short","openblas","openblas_core","onednn","weights_bytes","seconds","batch","threads"]
o=dict(zip(k,sys.argv[1:])); o["key"]="meta"; o["weights_bytes"]=int(o["weights_bytes"]); print(json.dumps(o))' \
    "$(date -u '+%Y-%m-%d %H:%M UTC')" "$CPU" "$NCPU" "$FLAGS" "start $LOAD0, end $(cut -d' ' -f1-3 /proc/loadavg)" "$GIT" \
    "$BIN ($("$BIN" cpu 2>/dev/null | tr -d '\n'))" "$TORCHV" "$SYSBLAS" "$SB_SHORT" "$OBVER" "$OBCORE" "${ONEDNN:-?}" "$WBYTES" "$SECS" "$BATCH" "$THREADS")"
$REP table "$OUT"
log "done in $(( $(date +%s) - T_START )) s; results in $OUT"
