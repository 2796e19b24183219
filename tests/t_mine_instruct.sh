#!/usr/bin/env bash
# `magiclens mine instruct` against tests/reference/chat_server.py, a loopback
# stand-in for an OpenAI-compatible endpoint that answers by the case named
# in the prompt (good, fenced JSON, malformed JSON, "image 1" leak, 429 with
# Retry-After, 500 once, always 500, too long, not English, URL copy) and
# logs every request.  Checks, against expectations written out here: the
# exact triplets.jsonl (paths rewritten for another output folder), the drop
# counts, the requests (Authorization header from the named variable, the
# rendered prompt, retries with the reason, Retry-After honoured, bounded
# 5xx retries), the cache (a re-run asks only what failed in transport, and
# nothing at all when everything was answered), kill -9 mid-run + re-run ==
# uninterrupted run, --no-llm templates, vision captions, and fatal errors.
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
T="$ML_TMP/mine_instruct"
rm -rf "$T"; mkdir -p "$T/data" "$T/out" "$T/kill" "$T/vis"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done' EXIT

start_server() { # name [args...]: starts a stand-in, sets PORT
    local name="$1"; shift
    $PY tests/reference/chat_server.py --port-file "$T/$name.port" --log "$T/$name.log" "$@" &
    PIDS+=($!)
    for _ in $(seq 200); do [ -s "$T/$name.port" ] && break; sleep 0.05; done
    PORT=$(cat "$T/$name.port")
}
nreq() { wc -l < "$T/$1.log"; }

# ---- fixtures: a shard with the images, pairs.jsonl ------------------------
$PY - "$T/data" <<'PYEOF'
import io, json, sys, tarfile
import numpy as np
from PIL import Image
d = sys.argv[1]
cases = ['good1', 'fenced', 'leak', 'bad1', 'badjson', 'limited', 'flaky', 'down', 'long',
         'cyrillic', 'url', 'good2']
with tarfile.open(d + '/shards/shard-000000.tar' if False else d + '/shard.tar', 'w') as t:
    for g in range(len(cases) + 30):
        for i in range(2):
            rng = np.random.default_rng(g * 2 + i)
            b = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(b, 'PNG')
            ti = tarfile.TarInfo('g%08d_%03d.png' % (g, i))
            ti.size = len(b.getvalue())
            t.addfile(ti, io.BytesIO(b.getvalue()))
def pair(g, case, qalt='blue running shoe', talt='the shoe box', absq=False):
    q = 'shards/shard-000000.tar::g%08d_000.png' % g
    if absq:
        q = d + '/' + q
    return {'group': g, 'page_url': 'https://shop.example/p/%d' % g,
            'page_title': 'Case case-%s: trail shoes' % case,
            'query': {'image': q, 'url': 'https://shop.example/i/%d_0.png' % g, 'alt': qalt,
                      'title': None, 'caption': None, 'context': 'Our best   seller\nin blue.'},
            'target': {'image': 'shards/shard-000000.tar::g%08d_001.png' % g,
                       'url': 'https://shop.example/i/%d_1.png' % g, 'alt': talt, 'title': None,
                       'caption': 'Comes in a recycled box.', 'context': None},
            'image_sim': 0.71, 'text_sim': 0.5, 'score': 0.65}
lines = [json.dumps(pair(g, c, absq=(c == 'good2'))) for g, c in enumerate(cases)]
lines.insert(2, lines[0])          # the same pair again: one call, one triplet
lines.insert(5, 'this is not json')
lines.insert(6, '')
open(d + '/pairs.jsonl', 'w').write('\n'.join(lines) + '\n')
open(d + '/pairs_nodown.jsonl', 'w').write(
    '\n'.join(l for l in lines if 'case-down' not in l) + '\n')
# for the kill test: 30 pairs answered after a delay
open(d + '/pairs_many.jsonl', 'w').write(''.join(
    json.dumps(pair(12 + k, 'k%02d' % k)) + '\n' for k in range(30)))
# for the vision test: two pairs sharing their query image
v = [pair(40, 'vis1'), pair(41, 'vis2')]
v[1]['query']['image'] = v[0]['query']['image']
open(d + '/pairs_vision.jsonl', 'w').write(''.join(json.dumps(p) + '\n' for p in v))
PYEOF
mkdir -p "$T/data/shards"; mv "$T/data/shard.tar" "$T/data/shards/shard-000000.tar"

start_server main
URL="http://127.0.0.1:$PORT/v1"
run_main() { # output [more args]
    local out="$1"; shift
    MY_TEST_KEY=sekrit-key "$ML" mine instruct --pairs "$T/data/pairs.jsonl" --output "$out" \
        --llm-url "$URL" --llm-model test-model --api-key-env MY_TEST_KEY --concurrency 3 \
        --retries 3 --invalid-retries 2 --backoff 0.05 --quiet "$@"
}
run_main "$T/out/triplets.jsonl" --stats "$T/out/stats.json" 2> "$T/err1.txt"
cat "$T/err1.txt"
$PY - "$T" <<'PYEOF'
import json, sys
T = sys.argv[1]
rows = [json.loads(l) for l in open(T + '/out/triplets.jsonl')]
ok = [(0, 'good1'), (1, 'fenced'), (2, 'leak'), (3, 'bad1'), (5, 'limited'), (6, 'flaky'),
      (11, 'good2')]
exp = []
for g, c in ok:
    q = '../data/shards/shard-000000.tar::g%08d_000.png' % g
    if c == 'good2':
        q = T + '/data/shards/shard-000000.tar::g%08d_000.png' % g  # absolute: kept
    exp.append({'query_image': q, 'instruction': 'show the %s variant of this item' % c,
                'target_image': '../data/shards/shard-000000.tar::g%08d_001.png' % g,
                'group': g, 'page_url': 'https://shop.example/p/%d' % g, 'source': 'llm'})
assert rows == exp, '\n'.join(map(str, rows))
assert [list(r) for r in rows][0] == ['query_image', 'instruction', 'target_image', 'group',
                                      'page_url', 'source']
s = json.load(open(T + '/out/stats.json'))
assert s['pairs_in'] == 14 and s['bad_lines'] == 1 and s['duplicates'] == 1, s
assert s['triplets_out'] == 7 and s['asked'] == 12 and s['cached'] == 0, s
assert s['dropped'] == {'invalid_bad_json': 1, 'llm_failed': 1, 'invalid_too_long': 1,
                        'invalid_not_english': 1, 'invalid_url': 1}, s['dropped']
assert s['unusable_answers'] == {'bad_json': 4, 'leak': 1, 'too_long': 3, 'not_english': 3,
                                 'url': 3} or sorted(s['unusable_answers'].items()) == sorted(
    {'bad_json': 4, 'leak': 1, 'too_long': 3, 'not_english': 3, 'url': 3}.items()), s
assert s['llm']['requests'] == 27 and s['llm']['http_429'] == 1 and s['llm']['http_5xx'] == 5, s
# the requests the server saw
log = [json.loads(l) for l in open(T + '/main.log')]
assert len(log) == 27, len(log)
assert all(r['auth'] == 'Bearer sekrit-key' for r in log)
assert all(r['path'] == '/v1/chat/completions' for r in log)
per = {}
for r in log:
    per.setdefault(r['case'], []).append(r)
counts = {c: len(v) for c, v in per.items()}
assert counts == {'good1': 1, 'fenced': 1, 'leak': 2, 'bad1': 2, 'badjson': 3, 'limited': 2,
                  'flaky': 2, 'down': 4, 'long': 3, 'cyrillic': 3, 'url': 3, 'good2': 1}, counts
lim = per['limited']
assert lim[0]['status'] == 429 and lim[1]['t'] - lim[0]['t'] >= 0.95, 'Retry-After not honoured'
fl = per['flaky']
assert fl[1]['t'] - fl[0]['t'] < 0.9  # plain backoff (0.05 s), not Retry-After
b = per['good1'][0]['body']
assert b['model'] == 'test-model' and b['max_tokens'] == 200 and abs(b['temperature'] - 0.7) < 1e-9
msgs = b['messages']
assert msgs[0]['role'] == 'system' and [m['role'] for m in msgs[1:]] == ['user', 'assistant'] * 3 + ['user']
# placeholders filled, whitespace collapsed, empty lines left out
assert msgs[-1]['content'] == '\n'.join([
    'Page: Case case-good1: trail shoes', 'Site: shop.example',
    'Query image alt text: blue running shoe', 'Query image context: Our best seller in blue.',
    'Target image alt text: the shoe box', 'Target image caption: Comes in a recycled box.']), msgs[-1]
# a retry after an unusable answer says why, after the answer it got
m2 = per['leak'][1]['body']['messages']
assert m2[-2] == {'role': 'assistant',
                  'content': json.dumps({'instruction': 'show image 1 but in another colour'})}
assert m2[-1]['role'] == 'user' and 'refers to the images' in m2[-1]['content']
assert m2[:-2] == per['leak'][0]['body']['messages']
print('main run OK')
PYEOF
grep -q "http 500" "$T/err1.txt"

# ---- re-runs with the cache ------------------------------------------------
n0=$(nreq main)
run_main "$T/out/triplets.jsonl" --stats "$T/out/stats2.json" 2> /dev/null
cp "$T/out/triplets.jsonl" "$T/out/rerun.jsonl"
$PY - "$T" "$n0" <<'PYEOF'
import json, sys
T, n0 = sys.argv[1], int(sys.argv[2])
log = [json.loads(l) for l in open(T + '/main.log')][n0:]
# only the pair that failed in transport is asked again (4 attempts)
assert [r['case'] for r in log] == ['down'] * 4, [r['case'] for r in log]
s = json.load(open(T + '/out/stats2.json'))
assert s['cached'] == 11 and s['asked'] == 1 and s['triplets_out'] == 7, s
PYEOF
# everything answered: zero requests, identical output
n1=$(nreq main)
MY_TEST_KEY=sekrit-key "$ML" mine instruct --pairs "$T/data/pairs_nodown.jsonl" \
    --output "$T/out/nodown.jsonl" --cache "$T/out/triplets.jsonl.cache.jsonl" \
    --llm-url "$URL" --llm-model test-model --api-key-env MY_TEST_KEY --retries 3 \
    --invalid-retries 2 --backoff 0.05 --quiet 2> /dev/null
[ "$(nreq main)" -eq "$n1" ] || { echo "re-run sent requests"; exit 1; }
cmp "$T/out/nodown.jsonl" "$T/out/triplets.jsonl"
# a cache line cut short (a kill while writing) is cut off, the rest is used
C="$T/out/triplets.jsonl.cache.jsonl"
lines=$(wc -l < "$C")
printf '{"key":"0123","kind":"instru' >> "$C"
MY_TEST_KEY=sekrit-key "$ML" mine instruct --pairs "$T/data/pairs_nodown.jsonl" \
    --output "$T/out/nodown.jsonl" --cache "$C" --llm-url "$URL" --llm-model test-model \
    --api-key-env MY_TEST_KEY --retries 3 --invalid-retries 2 --backoff 0.05 --quiet 2> /dev/null
[ "$(nreq main)" -eq "$n1" ] && [ "$(wc -l < "$C")" -eq "$lines" ] && [ -z "$(tail -c 1 "$C")" ]
cmp "$T/out/nodown.jsonl" "$T/out/triplets.jsonl"
# another model is another cache key: asked again
n2=$(nreq main)
MY_TEST_KEY=sekrit-key "$ML" mine instruct --pairs "$T/data/pairs_nodown.jsonl" \
    --output "$T/out/other.jsonl" --cache "$T/out/triplets.jsonl.cache.jsonl" \
    --llm-url "$URL/chat/completions" --llm-model other-model --api-key-env MY_TEST_KEY \
    --retries 0 --invalid-retries 0 --backoff 0.05 --quiet 2> /dev/null
[ "$(nreq main)" -gt "$n2" ]

# ---- kill -9 in the middle, run again == uninterrupted --------------------
start_server slow --delay 0.1
SURL="http://127.0.0.1:$PORT"
slow=(mine instruct --pairs "$T/data/pairs_many.jsonl" --llm-url "$SURL" --llm-model m
      --concurrency 2 --backoff 0.05 --quiet)
"$ML" "${slow[@]}" --output "$T/kill/whole.jsonl" 2> /dev/null
n3=$(nreq slow)
"$ML" "${slow[@]}" --output "$T/kill/t.jsonl" 2> /dev/null &
pid=$!
for _ in $(seq 400); do [ "$(nreq slow)" -ge $((n3 + 10)) ] && break; sleep 0.02; done
kill -9 "$pid"; wait "$pid" 2> /dev/null || true
[ ! -e "$T/kill/t.jsonl" ]
echo "killed after $(($(nreq slow) - n3)) requests"
"$ML" "${slow[@]}" --output "$T/kill/t.jsonl" 2> /dev/null
cmp "$T/kill/t.jsonl" "$T/kill/whole.jsonl"
$PY - "$T" "$n3" <<'PYEOF'
import json, sys
T, n3 = sys.argv[1], int(sys.argv[2])
rows = [json.loads(l) for l in open(T + '/kill/t.jsonl')]
assert [r['instruction'] for r in rows] == ['show the k%02d variant of this item' % k for k in range(30)]
assert rows[0]['query_image'] == '../data/shards/shard-000000.tar::g00000012_000.png'
log = [json.loads(l) for l in open(T + '/slow.log')][n3:]
# every pair asked once, plus at most the requests in flight at the kill
assert 30 <= len(log) <= 32, len(log)
assert {r['case'] for r in log} == {'k%02d' % k for k in range(30)}
PYEOF

# ---- --no-llm: templates -----------------------------------------------------
"$ML" mine instruct --pairs "$T/data/pairs.jsonl" --output "$T/data/tpl.jsonl" --no-llm \
    --stats "$T/data/tpl_stats.json" 2> /dev/null
$PY - "$T" <<'PYEOF'
import json, sys
T = sys.argv[1]
def fnv(s, h):
    for c in s.encode():
        h = ((h ^ c) * 16777619) & 0xffffffff
    return h
def text(img):
    for k in ('alt', 'caption', 'title'):
        if img.get(k):
            t = ' '.join(' '.join(img[k].split()).split(' ')[:12]).rstrip('.,;:!?- ')
            return t or None
    return None
WITH_Q = ['find {t}', '{t} instead of {q}', 'show {t}', 'from the same page: {t}', 'replace {q} with {t}']
ONLY_T = ['find {t}', 'show {t}', 'from the same page: {t}']
exp, seen = [], set()
for line in open(T + '/data/pairs.jsonl'):
    try:
        p = json.loads(line)
    except ValueError:
        continue
    qi, ti = p['query']['image'], p['target']['image']
    if (qi, ti) in seen:
        continue
    seen.add((qi, ti))
    q, t = text(p['query']), text(p['target'])
    h = fnv(ti, fnv('\n', fnv(qi, 2166136261)))
    use_q = q is not None and q.lower() != t.lower()
    tpl = WITH_Q[h % 5] if use_q else ONLY_T[h % 3]
    exp.append({'query_image': qi, 'instruction': tpl.replace('{t}', t).replace('{q}', q or ''),
                'target_image': ti, 'group': p['group'], 'page_url': p['page_url'],
                'source': 'template'})
rows = [json.loads(l) for l in open(T + '/data/tpl.jsonl')]
assert rows == exp, '\n'.join(map(str, rows))
assert len({r['instruction'] for r in rows}) >= 2  # more than one template in use
s = json.load(open(T + '/data/tpl_stats.json'))
assert s['triplets_out'] == 12 and s['duplicates'] == 1 and s['bad_lines'] == 1, s
print('templates OK:', rows[0]['instruction'], '|', rows[1]['instruction'])
PYEOF

# ---- vision captions -------------------------------------------------------
start_server vis
VURL="http://127.0.0.1:$PORT/v1"
vis_run() { "$ML" mine instruct --pairs "$T/data/pairs_vision.jsonl" --output "$T/vis/t.jsonl" \
    --llm-url "$VURL" --llm-model m --vision-url "$VURL" --vision-model vm --backoff 0.05 \
    --quiet --stats "$T/vis/stats.json"; }
vis_run 2> /dev/null
$PY - "$T" <<'PYEOF'
import hashlib, json, sys, tarfile
T = sys.argv[1]
tar = tarfile.open(T + '/data/shards/shard-000000.tar')
def cap(member):
    return 'a photo with checksum ' + hashlib.sha256(tar.extractfile(member).read()).hexdigest()[:8]
log = [json.loads(l) for l in open(T + '/vis.log')]
vision = [r for r in log if r['kind'] == 'vision']
chat = [r for r in log if r['kind'] == 'chat']
assert len(vision) == 3 and len(chat) == 2, (len(vision), len(chat))   # the shared image once
for r in vision:
    assert r['body']['model'] == 'vm'
    part = r['body']['messages'][0]['content']
    assert part[0]['type'] == 'text' and 'Describe this image' in part[0]['text']
    assert part[1]['image_url']['url'].startswith('data:image/png;base64,')
for r in chat:
    g = 40 if r['case'] == 'vis1' else 41
    u = r['body']['messages'][-1]['content']
    assert 'Query image description: ' + cap('g00000040_000.png') in u, u
    assert 'Target image description: ' + cap('g%08d_001.png' % g) in u, u
rows = [json.loads(l) for l in open(T + '/vis/t.jsonl')]
assert [r['instruction'] for r in rows] == ['show the vis1 variant of this item',
                                            'show the vis2 variant of this item']
s = json.load(open(T + '/vis/stats.json'))
assert s['captions']['asked'] == 3 and s['captions']['cached'] == 0, s
print('vision OK')
PYEOF
cp "$T/vis/t.jsonl" "$T/vis/first.jsonl"
n4=$(nreq vis)
vis_run 2> /dev/null
[ "$(nreq vis)" -eq "$n4" ] || { echo "vision re-run sent requests"; exit 1; }
cmp "$T/vis/t.jsonl" "$T/vis/first.jsonl"

# ---- fatal errors ----------------------------------------------------------
start_server locked --require-key right
set +e
"$ML" mine instruct --pairs "$T/data/pairs_many.jsonl" --output "$T/out/denied.jsonl" \
    --llm-url "http://127.0.0.1:$PORT/v1" --llm-model m --quiet 2> "$T/e401"; rc=$?
set -e
cat "$T/e401"
[ "$rc" -eq 1 ] && grep -q "http 401" "$T/e401" && [ ! -e "$T/out/denied.jsonl" ]
[ "$(nreq locked)" -le 4 ]   # stops at once, not one 401 per pair
printf '=== system\nx\n=== user\nPage: {page_titel}\n' > "$T/bad_prompt.txt"
if "$ML" mine instruct --pairs "$T/data/pairs.jsonl" --output "$T/out/x.jsonl" --llm-url "$URL" \
    --llm-model m --prompt "$T/bad_prompt.txt" 2> "$T/e_prompt"; then exit 1; fi
grep -q "bad_prompt.txt line 4: unknown placeholder {page_titel}" "$T/e_prompt"
set +e; "$ML" mine instruct --pairs "$T/data/pairs.jsonl" --output x.jsonl 2> /dev/null; rc=$?; set -e
[ "$rc" -eq 2 ]
# ---- the output is what `magiclens train` reads ----------------------------
$PY tests/reference/make_checkpoint.py --size tiny --seed 7 --out "$T/m.pkl" > /dev/null
"$ML" train --init "$T/m.pkl" --data "$T/out/triplets.jsonl" --output "$T/train" --steps 1 \
    --batch 4 2> "$T/train.txt"
grep -q "7 triplets (14 images, 7 instructions, 0 skipped)" "$T/train.txt"
grep -q '"dropped":0' "$T/train/log.jsonl"
echo "mine instruct OK"
