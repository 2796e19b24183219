#!/usr/bin/env bash
# The mining pipeline end to end, each stage reading the previous stage's
# output: a WARC crawl of a loopback web site -> mine pages -> mine fetch ->
# mine pairs -> mine instruct (--no-llm) -> magiclens train.  Checks the
# pages and image URLs that survive cleaning (the fixture's own list), that
# every fetched image is byte-identical to the served file, that pairs stay
# inside their page, and that training reads every triplet.
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
T="$ML_TMP/mine_pipeline"
rm -rf "$T"; mkdir -p "$T"
$PY tests/reference/pipeline_fixture.py "$T" &
srv=$!
trap 'kill $srv 2> /dev/null || true' EXIT
for _ in $(seq 1 400); do [ -f "$T/port" ] && break; $PY -c "import time; time.sleep(0.025)"; done
[ -f "$T/port" ] || { echo "fixture server did not start"; exit 1; }
$PY tests/reference/make_checkpoint.py --size tiny --seed 7 --out "$T/m.pkl" > /dev/null

"$ML" mine pages --warc "$T/crawl.warc.gz" --output "$T/pages.jsonl" --quiet
"$ML" mine fetch --pages "$T/pages.jsonl" --output "$T/shards" --timeout 10 --quiet
"$ML" mine pairs --shards "$T/shards" --model "$T/m.pkl" --output "$T/pairs.jsonl" \
    --min-sim -1 --max-sim 0.99999 --max-pairs-per-page 3 --precision fp32 --quiet
mkdir -p "$T/out"
"$ML" mine instruct --pairs "$T/pairs.jsonl" --no-llm --output "$T/out/triplets.jsonl" --quiet
"$ML" train --init "$T/m.pkl" --data "$T/out/triplets.jsonl" --output "$T/run" --steps 2 \
    --batch 4 2> "$T/train.err"

$PY - "$T" <<'PYEOF'
import json, os, sys, tarfile
t = sys.argv[1]
exp = json.load(open(t + "/expected.json"))
pages = [json.loads(l) for l in open(t + "/pages.jsonl")]
assert [p["url"] for p in pages] == [e["url"] for e in exp], "pages differ"
for p, e in zip(pages, exp):
    assert p["title"] == e["title"]
    assert [i["url"] for i in p["images"]] == e["images"], (p["images"], e["images"])
served = {}
for e in exp:
    for u in e["images"]:
        served[u] = open(t + "/site/img/" + u.rsplit("/", 1)[1], "rb").read()
kept = {}
for name in sorted(os.listdir(t + "/shards")):
    if not name.endswith(".tar"):
        continue
    with tarfile.open(t + "/shards/" + name) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    for k, v in files.items():
        if k.endswith(".json"):
            meta = json.loads(v)
            img = files[k[:-5] + ".png"]
            assert img == served[meta["url"]], meta["url"]
            kept[k[:-5]] = meta["group"]
assert len(kept) == 12, kept
pairs = [json.loads(l) for l in open(t + "/pairs.jsonl")]
assert len(pairs) == 9, len(pairs)
for p in pairs:
    gq = kept[p["query"]["image"].split("::")[1][:-4]]
    gt = kept[p["target"]["image"].split("::")[1][:-4]]
    assert gq == gt == p["group"], p
trip = [json.loads(l) for l in open(t + "/out/triplets.jsonl")]
assert len(trip) == 9 and all(x["instruction"] for x in trip)
for x in trip:  # paths relative to the triplets file's folder
    tar = os.path.join(t, "out", x["query_image"].split("::")[0])
    assert os.path.exists(tar), x
err = open(t + "/train.err").read()
assert "9 triplets" in err and "0 skipped" in err, err
log = [json.loads(l) for l in open(t + "/run/log.jsonl")]
assert len(log) == 2 and all(l["dropped"] == 0 for l in log), log
print("pipeline: 3 pages, 12 images, 9 pairs, 9 triplets, trained 2 steps")
PYEOF
