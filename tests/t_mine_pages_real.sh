#!/usr/bin/env bash
# `magiclens mine pages` on the real WARC/ARC files in $ML_SHARED/warc-samples
# (crawlers' files and torture tests, never copied into the project): no
# crash, exit 0, valid JSON with absolute http(s) image URLs, known facts.
# Skipped (exit 77, one SKIP line) when ../shared is absent.
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
S="$ML_SHARED/warc-samples"
if [ ! -d "$S" ]; then
    echo "SKIP t_mine_pages_real: $S is absent (the real WARC samples live in ../shared)"
    exit 77
fi
T="$ML_TMP/mine_pages_real"
rm -rf "$T"; mkdir -p "$T"

# Real archives (crawlers' files and torture tests): no crash, exit 0,
# valid JSON with absolute http(s) image URLs, a few known facts.
"$ML" mine pages --quiet --warc "$S"/*.warc "$S"/*.gz "$S"/*.arc --output "$T/real.jsonl" \
    --stats "$T/real.json" 2> "$T/real.err"
"$ML" mine pages --quiet --min-images 0 --warc "$S/transfer_compression_brotli.warc.gz" \
    "$S/clueweb-quirk.warc.gz" --output "$T/br.jsonl" 2> /dev/null
$PY - "$T" <<'PYEOF'
import json, sys
T = sys.argv[1]
rows = [json.loads(l.decode("utf-8")) for l in open(f"{T}/real.jsonl", "rb")]  # strict UTF-8
st = json.load(open(f"{T}/real.json"))
per = {r["file"].rsplit("/", 1)[1]: r for r in st["per_file"]}
assert len(per) == 48, len(per)
for r in rows:
    assert r["url"].startswith(("http://", "https://")), r["url"]
    assert 2 <= len(r["images"]) <= 50
    for im in r["images"]:
        assert im["url"].startswith(("http://", "https://")) and " " not in im["url"], im["url"]
    assert isinstance(r["offset"], int) and r["offset"] >= 0
# record counts agree with the README's lenient reader on intact files
for name, n in {"IAH-20080430204825-00000-blackbook.warc.gz": 822, "iana.warc.gz": 343,
                "sample-1.warc.gz": 231, "1-1-20110922131213-00000-svc-VirtualBox.arc": 102,
                "books.toscrape.warc": 60, "clueweb-quirk.warc.gz": 30}.items():
    assert per[name]["records"] == n, (name, per[name]["records"], n)
assert per["IAH-20080430204825-00000-blackbook.warc.gz"]["pages_out"] >= 4
assert per["sample-1.warc.gz"]["pages_out"] >= 20
bt = [r for r in rows if r["warc"].endswith("books.toscrape.warc")]
assert len(bt) == 1 and len(bt[0]["images"]) == 20, bt
assert all("books.toscrape.com/media/cache/" in im["url"] for im in bt[0]["images"])
assert bt[0]["images"][0]["alt"] == "A Light in the Attic"
err = open(f"{T}/real.err").read()
assert "clipped.warc.gz: record at offset 0 is truncated" in err
assert "example-trunc.warc: unexpected data at offset" in err
# brotli content encoding, and an EUC-JP page (charset from the HTTP header)
br = [json.loads(l) for l in open(f"{T}/br.jsonl")]
assert br[0]["title"] == "Simple page", br[0]
assert any("ヘッドポーター" in (r["title"] or "") for r in br[1:]), [r["title"] for r in br[1:4]]
print(f"real samples: {len(rows)} pages, {sum(len(r['images']) for r in rows)} images")
PYEOF
echo "mine pages (real samples) OK"
