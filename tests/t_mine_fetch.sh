#!/usr/bin/env bash
# `magiclens mine fetch` against a loopback server (tests/reference/img_server.py)
# with good images and hostile endpoints.  The expectations come from the
# server's own definition of each URL: the exact keys written, every stored
# byte string equal to what was served, metadata (sizes from PIL, pHash from
# the numpy reference), drop reasons per image and in total, the retry policy
# seen from the server side (404 never retried, Retry-After honoured), the
# per-host concurrency limit as the server saw it, bounded run time; a
# re-run of a complete folder, refused resumes with other settings or input,
# a simulated crash (torn journal, stale .tmp, uncommitted shard) and
# SIGKILLs in the middle of real runs, all ending in the same shards,
# byte for byte, as an uninterrupted run; the shard reader (--list).
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
T="$ML_TMP/mine_fetch"
rm -rf "$T"; mkdir -p "$T/main" "$T/kill"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; }
trap cleanup EXIT

# Starts a server for a scenario in folder $1 and waits (polling) for its port file.
start_server() {
    $PY tests/reference/img_server.py "$1" --scenario "$2" > "$1/server.log" 2>&1 &
    pids+=($!)
    local t0=$SECONDS
    until [ -s "$1/port" ]; do
        kill -0 "${pids[-1]}" 2> /dev/null || { cat "$1/server.log"; echo "server died"; exit 1; }
        [ $((SECONDS - t0)) -lt 60 ] || { echo "server did not start"; exit 1; }
        sleep 0.05
    done
}
commits() { local n; n=$(grep -c '"commit"' "$1/fetch.log" 2> /dev/null) || true; echo "${n:-0}"; }

# The checks on one output folder, against the server's expectation.
cat > "$T/check.py" <<'PYEOF'
import hashlib, io, json, sys, tarfile, glob, os
sys.path.insert(0, "tests/reference")
from img_server import phash, decoded
out, exp_path = sys.argv[1], sys.argv[2]
exp = json.load(open(exp_path))
shards = sorted(glob.glob(f"{out}/shard-*.tar"))
assert not glob.glob(f"{out}/*.tmp"), "stale .tmp left"
names, got = [], {}
for sh in shards:
    with tarfile.open(sh) as tf:
        for m in tf.getmembers():
            assert m.isfile() and m.mode & 0o777 == 0o644 and m.mtime == 0, (sh, m.name)
            names.append(m.name)
            key, ext = m.name.split(".", 1)
            got.setdefault(key, {})[ext] = tf.extractfile(m).read()
keys = sorted(exp["keys"])
assert sorted(got) == keys, f"keys\n got {sorted(got)}\n exp {keys}"
# Samples in input order: KEY.ext then KEY.json, groups never split over shards.
assert names == [n for k in keys for n in (f"{k}.{exp['keys'][k]['ext']}", f"{k}.json")], names
for k in keys:
    e, g = exp["keys"][k], got[k]
    assert set(g) == {e["ext"], "json"}, (k, set(g))
    data = g[e["ext"]]
    assert hashlib.sha256(data).hexdigest() == e["sha256"], f"{k}: bytes differ from the served ones"
    m = json.loads(g["json"])
    for f in ("group", "index", "url", "final_url", "content_type", "bytes"):
        assert m[f] == e[f], (k, f, m[f], e[f])
    assert (m["decoded_width"], m["decoded_height"]) == (e["width"], e["height"]), k
    assert m["key"] == k and m["format"] == e["ext"], k
    assert m["phash"] == e["phash"], (k, m["phash"], e["phash"])
    src = json.loads(open(os.path.join(os.path.dirname(exp_path), "pages.jsonl")).read().split("\n")[e["group"]])
    assert m["alt"] == src["images"][e["index"]]["alt"] and m["context"] == src["images"][e["index"]]["context"]
    assert m["width"] == 300 and m["height"] is None and m["page_title"] == src["title"]
    assert m["group_images"] == len(src["images"])
    assert m["group_kept"] == sum(1 for x in exp["images"][e["group"]] if x == "kept"), k
# Per-image outcome in the journal, and the counts in the stats.
why = {}
for line in open(f"{out}/fetch.log"):
    j = json.loads(line)
    if "group" in j:
        assert j["group"] not in why, f"group {j['group']} twice in the journal"
        why[j["group"]] = j["why"]
assert [why[g] for g in range(exp["groups"])] == exp["images"], \
    "\n".join(f"group {g}: got {why.get(g)} exp {exp['images'][g]}" for g in range(exp["groups"]) if why.get(g) != exp["images"][g])
if len(sys.argv) > 3:
    st = json.load(open(sys.argv[3]))
    assert st["images_dropped"] == exp["dropped"], (st["images_dropped"], exp["dropped"])
    assert st["images_kept"] == len(keys) == st["samples"]
    assert st["images_in"] == exp["images_in"] and st["pages_in"] == exp["groups"]
    assert st["pages_bad"] == exp["pages_bad"]
    assert st["shards"] == len(shards)
print(f"{out}: {len(keys)} samples in {len(shards)} shards as expected")
PYEOF

# ---- 1. the hostile server --------------------------------------------------------
start_server "$T/main" main
M="$T/main"
OPTS=(--concurrency 4 --per-host 2 --timeout 2 --retries 1 --backoff 0.2 --max-bytes 100000 --shard-size 4)
t0=$(date +%s.%N)
"$ML" mine fetch --pages "$M/pages.jsonl" --output "$M/out" "${OPTS[@]}" --stats "$M/stats.json" 2> "$M/err.txt"
t1=$(date +%s.%N)
cat "$M/err.txt"
$PY "$T/check.py" "$M/out" "$M/expected.json" "$M/stats.json"
# Bounded: two 2 s attempts at the trickling URL (+ back-off) dominate.
$PY -c "import sys; d = $t1 - $t0; print(f'run took {d:.1f} s'); assert 4 <= d < 20, d"
grep -q 'line 6: .*(skipped)' "$M/err.txt"
grep -q 'images dropped: ' "$M/err.txt"
# What the server saw.
$PY - "$M" <<'PYEOF'
import json, sys, urllib.request
M = sys.argv[1]
base = json.load(open(f"{M}/port"))
st = json.loads(urllib.request.urlopen(base["A"] + "/stats").read())
req, mx, times = st["requests"], st["max_active"], st["times"]
print("server: max in progress per address", mx)
# The per-host limit (2): never exceeded, and reached on the busy host.
assert mx["127.0.0.1"] == 2 and mx["127.0.0.2"] <= 2, mx
# Retries: never on 404 or redirect errors; once on 5xx, 429, timeouts (--retries 1).
expect = {"/404": 1, "/flaky500/a4.jpg": 2, "/flaky429/a6.webp": 2, "/always500": 2, "/slow": 2,
          "/img/a1_near.jpg": 1, "/tofile": 1, "/toftp": 1, "/loop": 6, "/html": 1,
          "/garbage": 1, "/corrupt": 1, "/huge_cl": 1, "/huge_nocl": 1}
for p, n in expect.items():
    assert req.get(p) == n, (p, req.get(p), n)
# Retry-After: 1 was honoured (the back-off alone is 0.2 s).
t = times["/flaky429/a6.webp"]
assert t[1] - t[0] >= 0.95, t
t = times["/flaky500/a4.jpg"]
assert 0.15 <= t[1] - t[0] < 3, t  # the 0.2 s back-off (plus waiting for a free slot)
print("server-side checks passed")
PYEOF

# The reader API (--list) sees the same samples as Python's tarfile.
"$ML" mine fetch --list "$M/out" > "$M/list.jsonl"
$PY - "$M" <<'PYEOF'
import json, sys
M = sys.argv[1]
exp = json.load(open(f"{M}/expected.json"))["keys"]
rows = [json.loads(l) for l in open(f"{M}/list.jsonl")]
assert [r["key"] for r in rows] == sorted(exp)
for r in rows:
    e = exp[r["key"]]
    assert (r["ext"], r["bytes"], r["group"], r["index"]) == (e["ext"], e["bytes"], e["group"], e["index"])
    assert r["meta"]["xxh3_128"] == r["xxh3_128"] and r["meta"]["phash"] == e["phash"]
print("reader: ok")
PYEOF
"$ML" mine fetch --list "$M/out/shard-000001.tar" | cmp - <(grep shard-000001 "$M/list.jsonl")

# ---- 2. re-runs ---------------------------------------------------------------------
sha() { (cd "$1" && sha256sum shard-*.tar); }
sha "$M/out" > "$M/shards.sha"
"$ML" mine fetch --pages "$M/pages.jsonl" --output "$M/out" "${OPTS[@]}" --quiet --stats "$M/stats2.json" 2> "$M/err2.txt"
grep -q 'is complete' "$M/err2.txt"
sha "$M/out" | cmp - "$M/shards.sha"
$PY "$T/check.py" "$M/out" "$M/expected.json" "$M/stats2.json"
set +e
"$ML" mine fetch --pages "$M/pages.jsonl" --output "$M/out" "${OPTS[@]}" --min-side 100 --quiet 2> "$M/err3.txt"; rc1=$?
head -3 "$M/pages.jsonl" > "$M/other.jsonl"
"$ML" mine fetch --pages "$M/other.jsonl" --output "$M/out" "${OPTS[@]}" --quiet 2> "$M/err4.txt"; rc2=$?
mkdir -p "$M/foreign" && cp "$M/out/shard-000000.tar" "$M/foreign/"
"$ML" mine fetch --pages "$M/pages.jsonl" --output "$M/foreign" "${OPTS[@]}" --quiet 2> "$M/err5.txt"; rc3=$?
"$ML" mine fetch --output "$M/x" 2> /dev/null; rc4=$?
"$ML" mine fetch --pages "$M/pages.jsonl" --output "$M/x" --timeout abc 2> /dev/null; rc5=$?
"$ML" mine fetch --pages "$M/nope.jsonl" --output "$M/x" 2> "$M/err6.txt"; rc6=$?
set -e
[ "$rc1" = 1 ] && grep -q 'other settings' "$M/err3.txt"
[ "$rc2" = 1 ] && grep -q 'another pages file' "$M/err4.txt"
[ "$rc3" = 1 ] && grep -q 'holds shards but no fetch.log' "$M/err5.txt"
[ "$rc4" = 2 ] && [ "$rc5" = 2 ] && [ "$rc6" = 1 ] && grep -q 'nope.jsonl' "$M/err6.txt"
sha "$M/out" | cmp - "$M/shards.sha"

# A crash after shard 1 was renamed but before its commit, with a torn journal
# line and a stale .tmp: the re-run removes them and ends with the same bytes.
cp -r "$M/out" "$M/crash"
$PY - "$M/crash/fetch.log" <<'PYEOF'
import sys
p = sys.argv[1]
lines = open(p).read().split("\n")
first = next(i for i, l in enumerate(lines) if '"commit"' in l)
open(p, "w").write("\n".join(lines[:first + 1]) + "\n" + lines[first + 1][:25])
PYEOF
echo junk > "$M/crash/shard-000001.tar.tmp"
echo junk > "$M/crash/shard-000007.tar"
"$ML" mine fetch --pages "$M/pages.jsonl" --output "$M/crash" "${OPTS[@]}" --quiet --stats "$M/stats3.json" 2> "$M/err7.txt"
grep -q 'resuming after 2 committed pages (next shard 1)' "$M/err7.txt"
sha "$M/crash" | cmp - "$M/shards.sha"
$PY "$T/check.py" "$M/crash" "$M/expected.json" "$M/stats3.json"
$PY -c "import json; s = json.load(open('$M/stats3.json'))['this_run']; assert s['groups_resumed'] == 2, s"

# Killed while writing the journal's first line: starts afresh.
mkdir -p "$M/torn" && printf '{"fetch_jour' > "$M/torn/fetch.log"
"$ML" mine fetch --pages "$M/pages.jsonl" --output "$M/torn" "${OPTS[@]}" --quiet 2> /dev/null
sha "$M/torn" | cmp - "$M/shards.sha"

# ---- 3. SIGKILL in the middle ------------------------------------------------------
K="$T/kill"
start_server "$K" kill
KOPTS=(--per-host 2 --timeout 1 --retries 0 --shard-size 2)
"$ML" mine fetch --pages "$K/pages.jsonl" --output "$K/ref" "${KOPTS[@]}" --quiet 2> /dev/null
$PY "$T/check.py" "$K/ref" "$K/expected.json"
# Killed twice (after 2 and after 5 commits), the window and concurrency
# changed between runs (they do not change the output), then run to the end.
kill_at() {
    "$ML" mine fetch --pages "$K/pages.jsonl" --output "$K/run" "${KOPTS[@]}" --window "$2" --quiet 2> /dev/null &
    local pid=$!
    until [ "$(commits "$K/run")" -ge "$1" ]; do
        kill -0 "$pid" 2> /dev/null || { echo "run ended before the kill"; exit 1; }
        sleep 0.02
    done
    kill -9 "$pid"; wait "$pid" 2> /dev/null || true
    ! grep -q '"end"' "$K/run/fetch.log" || { echo "the kill came after the end"; exit 1; }
    echo "killed after $(commits "$K/run") commits: $(ls "$K/run" | tr '\n' ' ')"
}
kill_at 2 3
kill_at 5 100
"$ML" mine fetch --pages "$K/pages.jsonl" --output "$K/run" "${KOPTS[@]}" --concurrency 3 --quiet 2> "$K/err.txt"
grep -q 'resuming after' "$K/err.txt"
sha "$K/ref" > "$K/ref.sha"
sha "$K/run" | cmp - "$K/ref.sha"
$PY "$T/check.py" "$K/run" "$K/expected.json"
echo "killed runs end with the same $(wc -l < "$K/ref.sha") shards as the uninterrupted run"

# ---- 4. the per-host rate limit, as the server saw it -------------------------------
t_start=$($PY -c 'import time; print(time.monotonic())')
"$ML" mine fetch --pages "$K/pages.jsonl" --output "$K/rate" "${KOPTS[@]}" --per-host 4 --rate 10 --quiet 2> /dev/null
sha "$K/rate" | cmp - "$K/ref.sha"
$PY - "$K" "$t_start" <<'PYEOF'
import json, sys, urllib.request
K, t0 = sys.argv[1], float(sys.argv[2])
base = json.load(open(f"{K}/port"))
st = json.loads(urllib.request.urlopen(base["A"] + "/stats").read())
for addr, ts in st["starts"].items():
    ts = sorted(t for t in ts if t >= t0)
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    print(f"--rate 10: {addr}: {len(ts)} requests, smallest gap {min(gaps):.3f} s")
    assert len(ts) >= 10 and min(gaps) >= 0.08, gaps
PYEOF
