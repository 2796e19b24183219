#!/usr/bin/env bash
# Scale-out with MPI (OpenMPI, several ranks on this machine): an index built
# by 3 ranks (3 shards) equals one built by one process; searches run by 1, 2
# and 3 ranks return exactly the same results; an incremental update by 2
# ranks of the 3-shard index equals the same update done by one process.
set -euo pipefail
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 MAGICLENS_THREADS=1
# Shared memory between the ranks on this machine; no network transport.
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
command -v mpirun > /dev/null || { echo "mpirun not found (scripts/install-deps.sh installs openmpi-bin)"; exit 1; }
ML="$PWD/$BUILD/magiclens"
T="$ML_TMP/index_mpi"
rm -rf "$T"; mkdir -p "$T/g"
/usr/bin/python3 tests/reference/make_images.py "$T/fx" --no-expected > /dev/null
for f in $(cat "$T/fx/good.txt"); do cp "$T/fx/$f" "$T/g/"; done
/usr/bin/python3 tests/reference/make_checkpoint.py --size tiny --seed 16 --out "$T/m.pkl" > /dev/null
# Under ASan, leak checking is off for the ranks only: OpenMPI's run-time
# plugins leak at exit in frames LSan cannot name (the same code paths run
# leak-checked as single processes in this and the other index tests).
MPI="env ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 mpirun --oversubscribe"
ix() { "$@" --model "$T/m.pkl" --precision fp32 --quiet; }
ix $MPI -n 3 "$ML" index --images "$T/g" --output "$T/mpi.mlindex"
ix "$ML" index --images "$T/g" --output "$T/one.mlindex"
grep -q '"shards": 3' "$T/mpi.mlindex/index.json" || { echo "expected 3 shards"; exit 1; }
for s in 0 1 2; do
    [ "$(stat -c %s "$T/mpi.mlindex/shard-000$s.log")" -gt 4096 ] || { echo "shard $s is empty"; exit 1; }
done
same_index() {
    "$ML" export --index "$1" --output "$T/e1" --quiet
    "$ML" export --index "$2" --output "$T/e2" --quiet
    /usr/bin/python3 - "$T/e1" "$T/e2" <<'PY'
import json, sys
import numpy as np
a, b = sys.argv[1:3]
ma = {json.loads(l)['path']: i for i, l in enumerate(open(a + '/metadata.jsonl'))}
mb = {json.loads(l)['path']: i for i, l in enumerate(open(b + '/metadata.jsonl'))}
assert sorted(ma) == sorted(mb), (sorted(set(ma) ^ set(mb)))
ea, eb = np.load(a + '/embeddings.npy'), np.load(b + '/embeddings.npy')
d = max(float(np.abs(ea[ma[p]] - eb[mb[p]]).max()) for p in ma)
assert d < 1e-6, d
print(f"ok  same {len(ma)} items, max diff {d:.1e}")
PY
}
same_index "$T/mpi.mlindex" "$T/one.mlindex"
q="$T/g/$(head -1 "$T/fx/good.txt")"
for args in "--image $q --text red -k 10" "--image $q -k 7 --offset 3" "--text a_dog -k 12" \
            "--like 5 --text blue -k 6" "--image $q -k 50 --min-score 0.5" "--image $q -k 8 --prefix $T/g/png"; do
    ix "$ML" search --index "$T/mpi.mlindex" $args --json | sed 's/,"took_ms".*//' > "$T/r1"
    for n in 2 3; do
        ix $MPI -n $n "$ML" search --index "$T/mpi.mlindex" $args --json | sed 's/,"took_ms".*//' > "$T/r$n"
        cmp "$T/r1" "$T/r$n" || { echo "search $args: $n ranks differ"; cat "$T/r1" "$T/r$n"; exit 1; }
    done
    [ "$(grep -o '"rank"' "$T/r1" | wc -l)" -gt 0 ] || { echo "search $args: no results"; exit 1; }
    echo "ok  search $args: 1, 2 and 3 ranks agree"
done
# Incremental update by 2 ranks on the 3-shard index vs one process.
rm "$T/g/$(sed -n 3p "$T/fx/good.txt")" "$T/g/$(sed -n 9p "$T/fx/good.txt")"
cp "$T/fx/$(sed -n 2p "$T/fx/good.txt")" "$T/g/new_copy_$(sed -n 2p "$T/fx/good.txt")"
cp "$T/fx/$(sed -n 4p "$T/fx/good.txt")" "$T/g/$(sed -n 5p "$T/fx/good.txt")"   # changed content
ix $MPI -n 2 "$ML" index --images "$T/g" --output "$T/mpi.mlindex"
ix "$ML" index --images "$T/g" --output "$T/one.mlindex"
same_index "$T/mpi.mlindex" "$T/one.mlindex"
