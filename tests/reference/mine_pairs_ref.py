#!/usr/bin/python3
"""Fixtures and the independent expectation for `magiclens mine pairs`.

  mine_pairs_ref.py make DIR
      writes DIR/shards/shard-00000{0,1}.tar in the `mine fetch` layout
      (KEY.png|jpg + KEY.json, KEY = g{group:08}_{idx:03}), the same images
      as files under DIR/img/, and DIR/items.jsonl for ref_embed.py (one
      item per good image: image file + the text the pairs stage compares:
      alt, else caption, else title, else "").
  mine_pairs_ref.py band DIR CLIP.npy
      prints "MIN MAX" similarity thresholds chosen from the reference
      values so that the near-duplicate pair is above MAX, at least one pair
      is below MIN, and no similarity lies within 2e-3 of either.
  mine_pairs_ref.py check DIR CLIP.npy PAIRS.jsonl STATS.json MIN MAX W PPP USES PREFIX
      applies the documented rule (docs/mining-pairs.md) in float64 to the
      reference CLIP embeddings and compares with the C output: same pairs
      in the same order, same metadata, similarities within 1e-4, and the
      drop counts.  PREFIX: the tar path as the output must spell it.
"""
import io
import json
import os
import sys
import tarfile

import numpy as np
from PIL import Image

# group -> list of images; each image: (kind, seed, meta overrides)
#   kind 'pat' = a pattern from seed, 'dup' = the previous image plus faint
#   noise (near duplicate), 'corrupt' = bytes that do not decode,
#   'noimg' = a JSON without image, 'badjson' = image with broken JSON.
GROUPS = [
    (0, 'Trail running shoes | Example Shop', [
        ('pat', 1, {'alt': 'blue trail running shoe'}),
        ('dup', 1, {'alt': 'blue trail running shoe, side'}),
        ('pat', 2, {'alt': 'shoe sole with deep lugs'}),
        ('pat', 3, {'alt': None, 'caption': 'The shoe box'}),
        ('pat', 4, {'alt': None}),
    ]),
    (1, 'Roast chicken recipe', [
        ('pat', 5, {'alt': 'raw chicken with herbs'}),
        ('pat', 6, {'alt': 'golden roast chicken'}),
        ('jpg', 7, {'alt': None, 'title': 'carving the chicken'}),
        ('pat', 8, {'alt': 'lemon and thyme'}),
    ]),
    (2, 'A page with one image', [
        ('pat', 9, {'alt': 'lonely image'}),
    ]),
    (3, 'Damaged samples', [
        ('pat', 10, {'alt': 'a red kettle'}),
        ('corrupt', 0, {'alt': 'broken'}),
        ('noimg', 0, {'alt': 'missing'}),
        ('badjson', 11, {}),
        ('pat', 12, {'alt': 'the kettle lid'}),
        ('pat', 13, {'alt': None}),
    ]),
]
SPLIT_AFTER = 7  # samples in shard 0; group 1 spans both shards


def pattern(seed, size=(72, 56)):
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / 16.0
    c = []
    for _ in range(3):
        a, b, p = rng.uniform(0.2, 3, 3)
        c.append(np.sin(a * x + p) * np.cos(b * y - p))
    img = (np.stack(c, -1) * 0.5 + 0.5) * rng.uniform(80, 255, 3)
    img += rng.uniform(0, 60, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(arr, fmt):
    b = io.BytesIO()
    Image.fromarray(arr).save(b, format=fmt, **({'quality': 90} if fmt == 'JPEG' else {}))
    return b.getvalue()


def samples():
    """[(key, member_ext or None, image bytes or None, json text)] in order."""
    out = []
    for g, title, imgs in GROUPS:
        prev = None
        for i, (kind, seed, over) in enumerate(imgs):
            key = 'g%08d_%03d' % (g, i)
            meta = {'key': key, 'group': g, 'index': i,
                    'page_url': 'https://example.org/page/%d' % g, 'page_title': title,
                    'page_lang': 'en', 'url': 'https://example.org/img/%d_%d.png' % (g, i),
                    'alt': None, 'title': None, 'caption': None,
                    'context': 'text near image %d of page %d' % (i, g),
                    'width': 72, 'height': 56}
            meta.update(over)
            ext, data = 'png', None
            if kind == 'pat':
                prev = pattern(seed)
                data = encode(prev, 'PNG')
            elif kind == 'jpg':
                prev = pattern(seed)
                ext, data = 'jpg', encode(prev, 'JPEG')
            elif kind == 'dup':
                rng = np.random.default_rng(99)
                noisy = np.clip(prev.astype(int) + rng.integers(-2, 3, prev.shape), 0, 255)
                data = encode(noisy.astype(np.uint8), 'PNG')
            elif kind == 'corrupt':
                data = b'\x89PNG\r\n\x1a\n' + b'garbage' * 20
            elif kind == 'noimg':
                ext = None
            elif kind == 'badjson':
                data = encode(pattern(seed), 'PNG')
            text = json.dumps(meta) if kind != 'badjson' else '{"group": 3, "alt": '
            out.append((key, ext, data, text, kind))
    return out


def pair_text(meta):
    for k in ('alt', 'caption', 'title'):
        if meta.get(k):
            return meta[k]
    return None


def make(d):
    os.makedirs(d + '/shards', exist_ok=True)
    os.makedirs(d + '/img', exist_ok=True)
    ss = samples()
    items = []
    for s, part in enumerate((ss[:SPLIT_AFTER], ss[SPLIT_AFTER:])):
        with tarfile.open('%s/shards/shard-%06d.tar' % (d, s), 'w', format=tarfile.USTAR_FORMAT) as t:
            for key, ext, data, text, kind in part:
                def add(name, payload):
                    ti = tarfile.TarInfo(name)
                    ti.size, ti.mtime, ti.mode = len(payload), 1700000000, 0o644
                    t.addfile(ti, io.BytesIO(payload))
                # JSON first for some samples, image first for others
                members = [('%s.json' % key, text.encode())]
                if ext:
                    members.append(('%s.%s' % (key, ext), data))
                if key.endswith('1'):
                    members.reverse()
                for name, payload in members:
                    add(name, payload)
                if kind in ('pat', 'jpg', 'dup'):
                    f = '%s/img/%s.%s' % (d, key, ext)
                    open(f, 'wb').write(data)
                    meta = json.loads(text)
                    items.append({'id': key, 'image': 'img/%s.%s' % (key, ext),
                                  'text': pair_text(meta) or '', 'shard': s,
                                  'member': '%s.%s' % (key, ext), 'meta': meta})
    with open(d + '/items.jsonl', 'w') as f:
        for it in items:
            f.write(json.dumps(it) + '\n')


def load(d, clip):
    items = [json.loads(l) for l in open(d + '/items.jsonl')]
    c = np.load(clip)
    img = c[:, 0] / np.linalg.norm(c[:, 0], axis=1, keepdims=True)
    txt = c[:, 1] / np.linalg.norm(c[:, 1], axis=1, keepdims=True)
    return items, img, txt


def all_pairs(items, img, txt, w):
    """{group: [(i, j, image_sim, text_sim or None, score)]} over item indices."""
    groups = {}
    for k, it in enumerate(items):
        groups.setdefault(it['meta']['group'], []).append(k)
    out = {}
    for g, ks in groups.items():
        lst = []
        for a in range(len(ks)):
            for b in range(a + 1, len(ks)):
                i, j = ks[a], ks[b]
                isim = float(img[i] @ img[j])
                has = bool(items[i]['text']) and bool(items[j]['text'])
                tsim = float(txt[i] @ txt[j]) if has else None
                score = (1 - w) * isim + w * tsim if has else isim
                lst.append((i, j, isim, tsim, score))
        out[g] = lst
    return out


def band(d, clip):
    items, img, txt = load(d, clip)
    ps = [p for lst in all_pairs(items, img, txt, 0.3).values() for p in lst]
    dup = [p for p in ps if items[p[1]]['id'] == 'g00000000_001' and items[p[0]]['id'] == 'g00000000_000']
    assert len(dup) == 1
    others = sorted(p[2] for p in ps if p is not dup[0])
    assert dup[0][2] > others[-1] + 4e-3, (dup[0][2], others[-1])
    hi = (dup[0][2] + others[-1]) / 2
    # the lowest third of the pairs is "unrelated"; threshold in a gap
    k = max(1, len(others) // 3)
    gaps = [(others[i + 1] - others[i], i) for i in range(k - 1, len(others) - 1)]
    gap, i = max(g for g in gaps if g[1] < len(others) // 2 + 1)
    assert gap > 4e-3, gap
    lo = (others[i] + others[i + 1]) / 2
    print('%.6f %.6f' % (lo, hi))


def check(d, clip, pairs_path, stats_path, lo, hi, w, ppp, uses, prefix):
    items, img, txt = load(d, clip)
    exp, drops = [], {}
    for g, lst in sorted(all_pairs(items, img, txt, w).items()):
        cand = []
        for p in lst:
            if p[2] > hi:
                drops['near_duplicate'] = drops.get('near_duplicate', 0) + 1
            elif p[2] < lo:
                drops['unrelated'] = drops.get('unrelated', 0) + 1
            else:
                cand.append(p)
        cand.sort(key=lambda p: (-p[4], p[0], p[1]))
        used, n = {}, 0
        for p in cand:
            if n >= ppp:
                drops['page_cap'] = drops.get('page_cap', 0) + 1
            elif used.get(p[0], 0) >= uses or used.get(p[1], 0) >= uses:
                drops['image_cap'] = drops.get('image_cap', 0) + 1
            else:
                used[p[0]] = used.get(p[0], 0) + 1
                used[p[1]] = used.get(p[1], 0) + 1
                n += 1
                exp.append(p)
        # scores must not be near-ties where the order matters
        for a, b in zip(cand, cand[1:]):
            assert abs(a[4] - b[4]) > 1e-4, ('near tie', a, b)
    got = [json.loads(l) for l in open(pairs_path)]
    assert len(got) == len(exp), (len(got), len(exp))

    def img_obj(it):
        m = it['meta']
        return {'image': '%s/shard-%06d.tar::%s' % (prefix, it['shard'], it['member']),
                'url': m['url'], 'alt': m['alt'], 'title': m['title'],
                'caption': m['caption'], 'context': m['context']}
    for g, (i, j, isim, tsim, score) in zip(got, exp):
        q, t = items[i], items[j]
        assert g['group'] == q['meta']['group'], g
        assert g['page_url'] == q['meta']['page_url'] and g['page_title'] == q['meta']['page_title']
        assert g['query'] == img_obj(q), (g['query'], img_obj(q))
        assert g['target'] == img_obj(t), (g['target'], img_obj(t))
        assert abs(g['image_sim'] - isim) < 1e-4, (g, isim)
        assert (g['text_sim'] is None) == (tsim is None), (g, tsim)
        if tsim is not None:
            assert abs(g['text_sim'] - tsim) < 1e-4, (g, tsim)
        assert abs(g['score'] - score) < 1e-4, (g, score)
        assert list(g.keys()) == ['group', 'page_url', 'page_title', 'query', 'target',
                                  'image_sim', 'text_sim', 'score'], list(g.keys())
    st = json.load(open(stats_path))
    assert st['pairs_dropped'] == drops, (st['pairs_dropped'], drops)
    assert st['pairs_out'] == len(exp)
    assert st['samples_dropped'] == {'decode_error': 1, 'no_image': 1, 'bad_metadata': 1}, st
    assert st['groups_dropped'] == {'one_image': 1}, st
    assert st['shards'] == 2 and st['images_embedded'] == len(items), st
    print('pairs: %d kept, dropped %s' % (len(exp), drops))
    return drops


if __name__ == '__main__':
    cmd = sys.argv[1]
    if cmd == 'make':
        make(sys.argv[2])
    elif cmd == 'band':
        band(sys.argv[2], sys.argv[3])
    elif cmd == 'check':
        a = sys.argv
        check(a[2], a[3], a[4], a[5], float(a[6]), float(a[7]), float(a[8]), int(a[9]),
              int(a[10]), a[11])
    else:
        sys.exit('unknown command ' + cmd)
