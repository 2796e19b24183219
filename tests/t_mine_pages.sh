#!/usr/bin/env bash
# `magiclens mine pages`: synthetic WARC/ARC files (tests/reference/make_warc.py)
# whose expected pages.jsonl is computed in Python from the page definitions;
# custom rules; warnings naming file and offset for damaged input; a SIGKILL
# leaves the old output intact and a re-run gives the same file; usage
# errors.  The real archives in ../shared are t_mine_pages_real.sh's.
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
T="$ML_TMP/mine_pages"
rm -rf "$T"; mkdir -p "$T"
$PY tests/reference/make_warc.py "$T"
IN=("$T/t1.warc.gz" "$T/t2.warc" "$T/t3.warc.gz" "$T/t4.arc")

# Compares pages.jsonl files as JSON, line by line, naming the first difference.
cat > "$T/compare.py" <<'PYEOF'
import json, sys
got = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
exp = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]
for i, (g, e) in enumerate(zip(got, exp)):
    if g != e:
        for k in sorted(set(g) | set(e)):
            if g.get(k) != e.get(k):
                sys.exit(f"line {i + 1} ({e.get('url')}): {k}\n got {g.get(k)}\n exp {e.get(k)}")
assert len(got) == len(exp), f"{len(got)} pages, expected {len(exp)}"
print(f"{len(got)} pages as expected")
PYEOF

# 1. Default rules: exact match with the Python expectation, counts, warnings.
"$ML" mine pages --quiet --warc "${IN[@]}" --output "$T/out.jsonl" --stats "$T/stats.json" 2> "$T/err.txt"
cat "$T/err.txt"
$PY "$T/compare.py" "$T/out.jsonl" "$T/expected.jsonl"
[ ! -e "$T/out.jsonl.tmp" ]
$PY - "$T" <<'PYEOF'
import json, sys
T = sys.argv[1]
st, meta = json.load(open(f"{T}/stats.json")), json.load(open(f"{T}/expected_meta.json"))
err = open(f"{T}/err.txt").read()
assert st["html_pages"] == meta["html_pages"], (st["html_pages"], meta["html_pages"])
assert st["images_found"] == meta["images_found"]
sk = st["records_skipped"]
for k, v in {"revisit": 1, "request": 1, "metadata": 1, "http_status": 1, "truncated": 1,
             "filedesc": 1, "not_http_url": 1, "not_html": 2, "warcinfo": 2}.items():
    assert sk.get(k) == v, (k, sk)
assert st["pages_dropped"] == {"too_few_images": 1, "too_many_images": 1}, st["pages_dropped"]
assert st["pages_out"] == sum(1 for _ in open(f"{T}/expected.jsonl"))
for name, msg in meta["warnings"]:
    assert f"{name}: {msg}" in err, f"no warning '{name}: {msg}'"
assert st["warnings"] >= len(meta["warnings"])
assert [r["file"].rsplit("/", 1)[1] for r in st["per_file"]] == ["t1.warc.gz", "t2.warc", "t3.warc.gz", "t4.arc"]
PYEOF

# 2. A rules file (lists replaced, gif allowed, smaller min_size) and --min-images.
"$ML" mine pages --quiet --warc "${IN[@]}" --output "$T/rules.jsonl" --rules "$T/rules.json" \
    --min-images 1 2> /dev/null
$PY "$T/compare.py" "$T/rules.jsonl" "$T/expected_rules.jsonl"
"$ML" mine pages --dump-rules --rules "$T/rules.json" | $PY -c "
import json, sys
r = json.load(sys.stdin)
assert r['drop_extensions'] == ['.svg'] and r['min_size'] == 40 and r['max_images'] == 50, r"

# 3. Deterministic: the same input gives the same bytes.
"$ML" mine pages --quiet --warc "${IN[@]}" --output "$T/again.jsonl" 2> /dev/null
cmp "$T/out.jsonl" "$T/again.jsonl"

# 4. Killed mid-run (SIGKILL while it waits inside a huge record on a pipe):
# the old output stays as it was; a re-run gives the uninterrupted output.
# The test holds the FIFO open read-write itself (a Linux FIFO opened O_RDWR
# does not block), so the writer exiting never gives the run an EOF: it is
# still waiting for the rest of the record when it is killed, whatever the
# timing (without this, a run that saw EOF first could finish and write).
echo '{"old": true}' > "$T/kill.jsonl"
mkfifo "$T/fifo"
exec 3<> "$T/fifo"
"$ML" mine pages --quiet --warc "$T/fifo" --output "$T/kill.jsonl" 2> /dev/null &
pid=$!
timeout 60 $PY - "$T/t2.warc" > "$T/fifo" <<'PYEOF'
import sys
out = sys.stdout.buffer
out.write(open(sys.argv[1], "rb").read())
out.write(b"WARC/1.0\r\nWARC-Type: resource\r\nContent-Type: text/html\r\n"
          b"WARC-Target-URI: http://x.example/big\r\nContent-Length: 100000000\r\n\r\n")
# more than a pipe buffer: this returns only after the reader took most of it
for _ in range(16):
    out.write(b"<p>" + b"x" * 65533)
out.flush()
PYEOF
kill -9 "$pid"
wait "$pid" 2> /dev/null || true
exec 3<&-
[ "$(cat "$T/kill.jsonl")" = '{"old": true}' ] || { echo "killed run changed the output"; exit 1; }
"$ML" mine pages --quiet --warc "${IN[@]}" --output "$T/kill.jsonl" 2> /dev/null
cmp "$T/out.jsonl" "$T/kill.jsonl"
[ ! -e "$T/kill.jsonl.tmp" ]

# 5. Usage errors: named, exit status 1 or 2, no output written.
set +e
"$ML" mine pages --warc "$T/nope.warc" --output "$T/e.jsonl" 2> "$T/e1"; r1=$?
echo '{"min_size": 10, "colour": "red"}' > "$T/bad_rules.json"
"$ML" mine pages --warc "${IN[0]}" --output "$T/e.jsonl" --rules "$T/bad_rules.json" 2> "$T/e2"; r2=$?
"$ML" mine pages --warc "${IN[0]}" --output "$T/e.jsonl" --min-images 9 --max-images 3 2> "$T/e3"; r3=$?
"$ML" mine pages --output "$T/e.jsonl" 2> /dev/null; r4=$?
set -e
[ "$r1" -eq 1 ] && grep -q "nope.warc" "$T/e1"
[ "$r2" -eq 1 ] && grep -q '"colour"' "$T/e2"
[ "$r3" -eq 1 ] && grep -q "min-images" "$T/e3"
[ "$r4" -eq 2 ]
[ ! -e "$T/e.jsonl" ]

echo "mine pages OK"
