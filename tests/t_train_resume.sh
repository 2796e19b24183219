#!/usr/bin/env bash
# Training runs that are interrupted and resumed, or spread over MPI ranks,
# end where an uninterrupted single-process run ends:
#  - --stop-after 3 then --resume: the same losses, bit for bit, and the same
#    final weights;
#  - SIGTERM mid-run saves a checkpoint and exits 0; --resume finishes equal;
#  - kill -9 mid-run, --resume from the last periodic checkpoint: equal;
#  - mpirun -n 2 with the same global batch: losses and weights equal to
#    float tolerance (only the summation order differs);
#  - a corrupt image and a malformed line are skipped and counted; a resume
#    with other settings, or a new run into a used folder, is refused.
# Both training modes are covered (--train fusion with cached towers, and
# --train all).
set -euo pipefail
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 MAGICLENS_THREADS=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
PY=/usr/bin/python3
case "$BUILD" in /*) ML="$BUILD/magiclens" ;; *) ML="$PWD/$BUILD/magiclens" ;; esac
T="$ML_TMP/train_resume"
rm -rf "$T"; mkdir -p "$T"
$PY tests/reference/make_checkpoint.py --size tiny64 --seed 21 --out "$T/m.pkl" > /dev/null
$PY tests/reference/make_shapes.py "$T/d" --train 20 --heldout 6 --seed 3 > /dev/null
# One unreadable image and one malformed line.
printf 'not a png' > "$T/d/img/broken.png"
cp "$T/d/train.jsonl" "$T/d/mixed.jsonl"
echo '{"query_image": "img/broken.png", "instruction": "two of them", "target_image": "img/train_0000_t.png"}' >> "$T/d/mixed.jsonl"
echo '{"query_image": 5}' >> "$T/d/mixed.jsonl"

common=(--init "$T/m.pkl" --data "$T/d/mixed.jsonl" --steps 6 --batch 6 --lr 1e-3 --warmup 2
        --seed 4 --quiet)
losses() { $PY -c "import json,sys; print(' '.join(repr(json.loads(l)['loss']) for l in open(sys.argv[1]) if '\"loss\"' in l))" "$1"; }
for mode in fusion all; do
    A="$T/$mode-a"; B="$T/$mode-b"; C="$T/$mode-c"; D="$T/$mode-d"
    "$ML" train "${common[@]}" --train $mode --output "$A" --save-every 2 2> "$T/$mode-a.err"
    grep -q 'broken.png' "$T/$mode-a.err" || { echo "no warning naming the broken image"; exit 1; }
    grep -q 'line 22' "$T/$mode-a.err" || { echo "no warning naming the malformed line"; exit 1; }
    [ -f "$A/final.mlens" ] && [ -f "$A/step_6.state" ] || { echo "missing final checkpoint"; exit 1; }
    [ "$(ls "$A"/step_*.state | wc -l)" -eq 2 ] || { echo "--keep 2 not honoured"; ls "$A"; exit 1; }
    la=$(losses "$A/log.jsonl")
    [ "$(echo "$la" | wc -w)" -eq 6 ] || { echo "expected 6 logged steps: $la"; exit 1; }

    # Stop after 3 steps, resume.
    "$ML" train "${common[@]}" --train $mode --output "$B" --stop-after 3 2> /dev/null
    [ -f "$B/step_3.state" ] && [ ! -f "$B/final.mlens" ] || { echo "stop-after did not checkpoint"; exit 1; }
    "$ML" train "${common[@]}" --train $mode --output "$B" --resume 2> /dev/null
    [ "$(losses "$B/log.jsonl")" = "$la" ] || { echo "$mode: resumed losses differ"; echo "$la"; losses "$B/log.jsonl"; exit 1; }
    cmp "$A/final.mlens" "$B/final.mlens" || { echo "$mode: resumed final model differs"; exit 1; }

    # SIGTERM once two steps are logged; then resume.
    "$ML" train "${common[@]}" --train $mode --output "$C" --save-every 0 --steps 400 2> "$T/$mode-c.err" &
    pid=$!
    for _ in $(seq 1 600); do
        [ -f "$C/log.jsonl" ] && [ "$(wc -l < "$C/log.jsonl")" -ge 2 ] && break
        if ! kill -0 $pid 2> /dev/null; then break; fi
        $PY -c "import time; time.sleep(0.05)"
    done
    kill -TERM $pid
    wait $pid || { echo "$mode: SIGTERM exit status $?"; cat "$T/$mode-c.err"; exit 1; }
    n=$(ls "$C"/step_*.state | sed 's/.*step_\([0-9]*\).state/\1/')
    [ -n "$n" ] && [ "$n" -lt 400 ] || { echo "$mode: no checkpoint after SIGTERM"; exit 1; }
    grep -q "stopped at step $n" "$T/$mode-c.err"

    # kill -9 after a periodic checkpoint, resume: equal to the uninterrupted run.
    "$ML" train "${common[@]}" --train $mode --output "$D" --save-every 1 --keep 0 2> /dev/null &
    pid=$!
    for _ in $(seq 1 600); do
        [ -f "$D/step_4.state" ] && break
        if ! kill -0 $pid 2> /dev/null; then break; fi
        $PY -c "import time; time.sleep(0.02)"
    done
    kill -9 $pid 2> /dev/null || true
    wait $pid 2> /dev/null || true
    "$ML" train "${common[@]}" --train $mode --output "$D" --resume --keep 0 2> /dev/null
    [ "$(losses "$D/log.jsonl")" = "$la" ] || { echo "$mode: losses after kill -9 differ"; exit 1; }
    cmp "$A/final.mlens" "$D/final.mlens" || { echo "$mode: final model after kill -9 differs"; exit 1; }

    # Two ranks, the same global batch.  Tolerance 1e-4: the fusion key biases
    # get gradients that are pure rounding noise (softmax ignores a constant
    # per-key shift), which Adam turns into full-size steps.
    MPI="env ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 mpirun --oversubscribe -n 2"
    $MPI "$ML" train "${common[@]}" --train $mode --output "$T/$mode-mpi" 2> /dev/null
    $PY tests/reference/compare_train.py "$A" "$T/$mode-mpi" 1e-4
done

# Refusals: a used folder without --resume; a resume with other settings.
set +e
"$ML" train "${common[@]}" --output "$T/fusion-a" 2> "$T/used.err"; rc1=$?
"$ML" train "${common[@]}" --batch 4 --output "$T/fusion-b" --steps 8 --resume 2> "$T/other.err"; rc2=$?
set -e
[ $rc1 -eq 1 ] && grep -q 'pass --resume' "$T/used.err" || { echo "used folder accepted"; cat "$T/used.err"; exit 1; }
[ $rc2 -eq 1 ] && grep -q 'other settings' "$T/other.err" || { echo "changed settings accepted"; cat "$T/other.err"; exit 1; }
# A damaged state file is refused with a message naming it, never used.
R="$T/damaged"; cp -r "$T/fusion-b" "$R"
st=$(ls "$R"/step_6.state)
printf '\x55' | dd of="$st" bs=1 seek=200 conv=notrunc status=none
set +e
"$ML" train "${common[@]}" --train fusion --output "$R" --steps 8 --resume 2> "$T/dam.err"; rc3=$?
truncate -s 100 "$st"
"$ML" train "${common[@]}" --train fusion --output "$R" --steps 8 --resume 2> "$T/trunc.err"; rc4=$?
set -e
[ $rc3 -eq 1 ] && grep -q 'step_6.state: checksum mismatch' "$T/dam.err" || { echo "damaged state accepted"; cat "$T/dam.err"; exit 1; }
[ $rc4 -eq 1 ] && grep -q 'step_6.state: truncated' "$T/trunc.err" || { echo "truncated state accepted"; cat "$T/trunc.err"; exit 1; }
echo "train resume: ok"
