#!/usr/bin/python3
"""End-to-end check of `magiclens eval` for dtin, genecis, t2i and custom.

  eval_check2.py MAGICLENS MODEL.pkl WORKDIR

Companion of eval_check.py (cirr, circo, fiq), same method: miniature
benchmarks written in the layouts their sources ship (entry structure taken
from ../shared/benchmarks and, for the GeneCIS attribute tasks, from
facebookresearch/genecis's documented format), generated images, one
`magiclens eval` run per benchmark, and every metric recomputed with numpy
from float64 reference embeddings (ref_embed.py, one call for everything):

- dtin: Pic2Word's two list files, images in the layout of MagicLens's
  data/README.md (the leading "imgnet/" of the listed paths dropped); query
  "find this object in {domain}"; a gallery image is a hit when its label is
  domain * 1000 + class; queries whose class has no image in the domain score
  0 and stay in the denominator.  The same data under imgnet/ gives the same
  numbers.
- genecis: change_object / focus_object (COCO val2017 images) and
  change_attribute / focus_attribute (Visual Genome images cut to
  instance_bbox with a 0.7 dilation and padded to a square, as GeneCIS's
  vaw_dataset.py does; the crops are recomputed here with PIL and must equal
  magiclens's crop files pixel for pixel); each query ranks [target] +
  gallery; the condition is the instruction; R@1/2/3 and their average.
- t2i: COCO captions JSON; CLIP text vs CLIP image embeddings (normalised).
- custom: queries.jsonl with image+text, image-only, text-only and over-long
  instructions (truncated, counted), several targets, a target that is not in
  the gallery; R@k and mAP@k; the query image left out of its own ranking.
- bad input (broken box, broken line) gives an error naming the file.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import eval_check as ec  # noqa: E402  (shared helpers: images, JSON, eval runs)

RNG = np.random.default_rng(11)
failures = ec.failures


def image(path, size=(48, 40)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    small = RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.NEAREST).save(path)


class Items:
    """Everything to embed, collected first and embedded in one call."""

    def __init__(self):
        self.items = []

    def add(self, img, text):
        self.items.append((img, text))
        return len(self.items) - 1

    def embed(self, model, work):
        inp = f'{work}/all_items.jsonl'
        with open(inp, 'w') as f:
            for i, (img, text) in enumerate(self.items):
                e = {'id': str(i), 'text': text}
                if img:
                    e['image'] = img
                f.write(json.dumps(e) + '\n')
        subprocess.run([sys.executable, f'{HERE}/ref_embed.py', '--model', model, '--input', inp,
                        '--output', f'{work}/all.npy', '--clip-out', f'{work}/all_clip.npy',
                        '--truncate'], check=True, stdout=subprocess.DEVNULL)
        self.E = np.load(f'{work}/all.npy')
        C = np.load(f'{work}/all_clip.npy')
        self.img = C[:, 0] / np.linalg.norm(C[:, 0], axis=1, keepdims=True)
        self.txt = C[:, 1] / np.linalg.norm(C[:, 1], axis=1, keepdims=True)


def order(scores, keys):
    """Best first; ties keep the given order (a stable sort)."""
    return [keys[i] for i in np.argsort(-np.asarray(scores), kind='stable')]


# ---- DTIN -------------------------------------------------------------------

DOMAINS = ('cartoon', 'origami', 'toy', 'sculpture')


def dtin_build(d, items):
    classes = ['n01443537', 'n01484850', 'n01494475', 'n01496331']
    targets, queries = [], []
    # ImageNet-R images: not every class exists in every domain
    for dom_i, dom in enumerate(DOMAINS):
        for c, wn in enumerate(classes):
            if (c + dom_i) % 4 == 3:
                continue  # no image of class c in this domain
            for j in range(1 + (c + dom_i) % 2):
                targets.append((f'imgnet/imagenet-r/{wn}/{dom}_{j}.jpg', dom_i * 1000 + c))
    # real ImageNet images: queries, and in the targets file with 6000 + class
    for c, wn in enumerate(classes):
        for j in range(2):
            p = f'imgnet/real/{wn}/ILSVRC2012_val_{c * 10 + j:08d}.JPEG'
            queries.append((p, c))
            targets.append((p, 6000 + c))
    order_ = RNG.permutation(len(targets))
    targets = [targets[i] for i in order_]
    with open(f'{d}/imgnet_real_query.txt', 'w') as f:
        f.writelines(f'{p} {c} \n' for p, c in queries)
    with open(f'{d}/imgnet_targets.txt', 'w') as f:
        f.writelines(f'{p} {c} \n' for p, c in targets)
    for p, _ in targets:  # MagicLens's layout: without the leading imgnet/
        image(f'{d}/{p.split("/", 1)[1]}')
    g = [items.add(f'{d}/{p.split("/", 1)[1]}', '') for p, _ in targets]
    q = {dom: [items.add(f'{d}/{p.split("/", 1)[1]}', f'find this object in {dom}')
               for p, _ in queries] for dom in DOMAINS}
    return targets, queries, g, q


def dtin_check(ml, model, work, d, built, items):
    targets, queries, g, q = built
    res = json.loads(ec.run_eval(ml, model, 'dtin', d, f'{work}/dtin-out').stdout)
    ranks = {(r['task'], r['query']): r for r in ec.rankings(f'{work}/dtin-out')}
    paths = [p for p, _ in targets]
    label = dict(targets)
    want = {}
    for dom_i, dom in enumerate(DOMAINS):
        hits = {10: 0, 50: 0}
        missing = 0
        for qi, (p, c) in enumerate(queries):
            lab = dom_i * 1000 + c
            if lab not in label.values():
                missing += 1
            o = order(items.E[g] @ items.E[q[dom][qi]], paths)
            qid = f'{p.rsplit("/", 1)[1]}-class-{c}-to-{dom}'
            r = ranks.get((dom, qid))
            if r is None:
                failures.append(f'dtin {dom}: no ranking for query {qid}')
            elif lab in label.values() and r['ranking'] != o[:len(r['ranking'])]:
                failures.append(f'dtin {dom} {qid}: ranking differs')
            for k in hits:
                hits[k] += any(label[x] == lab for x in o[:k])
        want[dom] = {f'R@{k}': 100 * v / len(queries) for k, v in hits.items()}
        t = next(t for t in res['tasks'] if t['task'] == dom)
        if t['queries'] != len(queries) or t['unscored'] != missing:
            failures.append(f'dtin {dom} counts: {t["queries"]} queries, {t["unscored"]} '
                            f'unscored; want {len(queries)}, {missing}')
    ec.check_metrics('dtin', res, want)
    for m in ('R@10', 'R@50'):
        ec.close(f'dtin average {m}', res['average'][m], np.mean([w[m] for w in want.values()]))
    # the same files with the images under imgnet/ (paths as listed)
    d2 = f'{work}/dtin2'
    os.makedirs(d2, exist_ok=True)
    for f in ('imgnet_real_query.txt', 'imgnet_targets.txt'):
        shutil.copy(f'{d}/{f}', f'{d2}/{f}')
    os.makedirs(f'{d2}/imgnet', exist_ok=True)
    for sub in ('real', 'imagenet-r'):
        shutil.copytree(f'{d}/{sub}', f'{d2}/imgnet/{sub}', dirs_exist_ok=True)
    res2 = json.loads(ec.run_eval(ml, model, 'dtin-toy', d2, f'{work}/dtin2-out').stdout)
    ec.check_metrics('dtin (imgnet/ layout)', res2, {'toy': want['toy']})


# ---- GeneCIS -------------------------------------------------------------------

def pil_crop(path, box):
    """GeneCIS's crop, written from its documented behaviour: dilate the box by
    0.7 of its size towards the top-left, clip to the image, PIL crop (which
    rounds the box), pad with black to a centred square."""
    im = Image.open(path)
    W, H = im.size
    x, y, w, h = box
    left, top = max(0, x - 0.7 * w), max(0, y - 0.7 * h)
    right, bottom = min(W, left + (1 + 0.7) * w), min(H, top + (1 + 0.7) * h)
    im = im.crop((left, top, right, bottom))
    cw, ch = im.size
    s = max(cw, ch)
    sq = Image.new(im.mode, (s, s), (0,) * len(im.getbands()))
    sq.paste(im, ((s - cw) // 2, (s - ch) // 2))
    return sq.convert('RGB')


def genecis_build(d, items, work):
    out = {}
    # object tasks: whole COCO val2017 images
    ids = [139 + 7 * i for i in range(14)]
    for i in ids:
        image(f'{d}/val2017/{i:012d}.jpg')
    for t, task in enumerate(('focus_object', 'change_object')):
        entries = []
        for q in range(4):
            ref, tgt = ids[q + t], ids[(q * 3 + 5 + t) % 14]
            gal = [ids[(q + 2 * j + 1 + t) % 14] for j in range(5)]
            gal = [x for x in gal if x not in (ref, tgt)]
            if q == 3:
                gal.append(tgt)  # as in the real change_object.json: the target twice
            entries.append({'condition': ['wall', 'person', 'table', 'floor'][q],
                            'gallery': [{'val_image_id': x} for x in gal],
                            'reference': {'val_image_id': ref}, 'target': {'val_image_id': tgt}})
        ec.dump(f'{d}/{task}.json', entries)
        out[task] = [(
            items.add(f'{d}/val2017/{e["reference"]["val_image_id"]:012d}.jpg', e['condition']),
            [items.add(f'{d}/val2017/{x["val_image_id"]:012d}.jpg', '')
             for x in [e['target']] + e['gallery']]) for e in entries]
    # attribute tasks: Visual Genome images and boxes
    vg = []
    for i, size in enumerate([(60, 45), (37, 70), (81, 50), (50, 50)]):
        vg.append((str(2373241 + i), size))
        image(f'{d}/VG_100K/{2373241 + i}.jpg', size)
    boxes = [[0.0, 3.5, 20.25, 11.0], [10.5, 7.5, 13.0, 30.5], [30.0, 20.0, 40.5, 29.75],
             [2.5, 2.5, 15.0, 15.0], [21.3, 0.0, 4.5, 9.5], [5.0, 40.0, 30.0, 28.0],
             [44.0, 1.0, 30.0, 12.5], [17.0, 17.0, 3.0, 3.0]]
    crops = {}

    def inst(n):
        img_id, _ = vg[n % 4]
        box = boxes[n % len(boxes)]
        key = (img_id, tuple(box))
        if key not in crops:
            p = f'{work}/pil-crops/{len(crops)}.png'
            os.makedirs(os.path.dirname(p), exist_ok=True)
            pil_crop(f'{d}/VG_100K/{img_id}.jpg', box).save(p)
            crops[key] = p
        return {'image_id': img_id, 'instance_bbox': box}, crops[key]

    for t, task in enumerate(('focus_attribute', 'change_attribute')):
        entries, emb = [], []
        for q in range(4):
            ref, ref_p = inst(q + t)
            tgt, tgt_p = inst(q + 3 + t)
            gal = [inst(q + 5 + j + t) for j in range(4)]
            entries.append({'reference': ref, 'target': tgt, 'gallery': [x for x, _ in gal],
                            'condition': ['color', 'material', 'pattern', 'shape'][q]})
            emb.append((items.add(ref_p, entries[-1]['condition']),
                        [items.add(p, '') for p in [tgt_p] + [p for _, p in gal]]))
        ec.dump(f'{d}/{task}.json', entries)
        out[task] = emb
    return out, crops


def genecis_check(ml, model, work, d, built, items):
    emb, crops = built
    out = f'{work}/genecis-out'
    res = json.loads(ec.run_eval(ml, model, 'genecis', d, out).stdout)
    want = {}
    for task, qs in emb.items():
        hits = {1: 0, 2: 0, 3: 0}
        for qi, cands in qs:
            o = order(items.E[cands] @ items.E[qi], list(range(len(cands))))
            for k in hits:
                hits[k] += 0 in o[:k]
        want[task] = {f'R@{k}': 100 * v / len(qs) for k, v in hits.items()}
    ec.check_metrics('genecis', res, want)
    if [t['task'] for t in res['tasks']] != ['focus_attribute', 'change_attribute',
                                             'focus_object', 'change_object']:
        failures.append(f'genecis task order: {[t["task"] for t in res["tasks"]]}')
    for m in ('R@1', 'R@2', 'R@3'):
        ec.close(f'genecis average {m}', res['average'][m], np.mean([w[m] for w in want.values()]))
    # magiclens's crop files equal PIL's crops
    for (img_id, box), p in crops.items():
        name = img_id + ''.join(f'_{repr(float(v))}' for v in box)
        mine = f'{out}/genecis-crops/{name}.png'
        if not os.path.exists(mine):
            # %.17g and repr() differ in form only ("3.0" vs "3"); find by prefix
            cand = [f for f in os.listdir(f'{out}/genecis-crops') if f.startswith(img_id + '_')
                    and [float(v) for v in f[:-4].split('_')[1:]] == list(box)]
            mine = f'{out}/genecis-crops/{cand[0]}' if cand else None
        if not mine:
            failures.append(f'genecis crop {img_id} {box}: no crop file')
            continue
        a = np.asarray(Image.open(mine).convert('RGB'))
        b = np.asarray(Image.open(p).convert('RGB'))
        if a.shape != b.shape or not np.array_equal(a, b):
            failures.append(f'genecis crop {img_id} {box}: {a.shape} differs from PIL {b.shape}')


# ---- text to image ----------------------------------------------------------

def t2i_build(d, items):
    imgs = [{'id': 500 + 3 * i, 'file_name': f'{500 + 3 * i:012d}.jpg', 'height': 40,
             'width': 48} for i in range(12)]
    for im in imgs:
        image(f'{d}/val2017/{im["file_name"]}')
    words = ['a red bus', 'two dogs on a beach', 'a bowl of soup', 'a man riding a horse',
             'a kitchen with a stove', 'a cat under a table', 'people at a market']
    anns = []
    for j in range(14):
        anns.append({'image_id': imgs[(j * 5) % 12]['id'], 'id': 9000 + j,
                     'caption': f'{words[j % 7]} number {j}'})
    anns.append({'image_id': 99999, 'id': 9100, 'caption': 'an image that is not listed'})
    ec.dump(f'{d}/annotations/captions_val2017.json',
            {'info': {}, 'licenses': [], 'images': imgs, 'annotations': anns})
    g = [items.add(f'{d}/val2017/{im["file_name"]}', '') for im in imgs]
    q = [items.add(None, a['caption']) for a in anns[:-1]]
    return imgs, anns, g, q


def t2i_check(ml, model, work, d, built, items):
    imgs, anns, g, q = built
    res = json.loads(ec.run_eval(ml, model, 't2i', d, f'{work}/t2i-out').stdout)
    ranks = {r['query']: r for r in ec.rankings(f'{work}/t2i-out')}
    keys = [str(im['id']) for im in imgs]
    hits = {1: 0, 5: 0, 10: 0}
    for a, qi in zip(anns, q):
        o = order(items.img[g] @ items.txt[qi], keys)
        if ranks[str(a['id'])]['ranking'] != o[:len(ranks[str(a['id'])]['ranking'])]:
            failures.append(f't2i {a["id"]}: ranking differs')
        for k in hits:
            hits[k] += str(a['image_id']) in o[:k]
    n = len(anns)
    ec.check_metrics('t2i', res, {'captions': {f'R@{k}': 100 * v / n for k, v in hits.items()}})
    t = res['tasks'][0]
    if t['queries'] != n or t['unscored'] != 1:
        failures.append(f't2i counts: {t["queries"]} queries, {t["unscored"]} unscored')


# ---- custom -------------------------------------------------------------------

LONG = ' '.join(['a very long instruction about a small red wooden boat'] * 9)


def custom_build(d, items):
    names = [f'gallery/{c}/img{i}.png' for c in ('a', 'b') for i in range(7)]
    for n in names:
        image(f'{d}/{n}')
    image(f'{d}/queries/q0.png')
    image(f'{d}/queries/q1.png')
    qs = [
        {'id': 'q-img-text', 'image': 'queries/q0.png', 'text': 'the same scene at night',
         'targets': [names[1], names[4], names[9]]},
        {'id': 'q-gallery-img', 'image': names[3], 'text': 'seen from above',
         'targets': [names[5]]},
        {'id': 'q-img-only', 'image': names[6], 'targets': [names[6], names[7], names[12]]},
        {'id': 'q-text-only', 'text': 'a photo of a red object', 'targets': [names[2], names[11]]},
        {'id': 'q-long', 'image': 'queries/q1.png', 'text': LONG, 'targets': [names[0]]},
        {'id': 'q-missing-target', 'image': 'queries/q1.png', 'text': 'x',
         'targets': ['gallery/none.png']},
    ]
    with open(f'{d}/queries.jsonl', 'w') as f:
        for q in qs:
            f.write(json.dumps(q) + '\n')
    g = [items.add(f'{d}/{n}', '') for n in names]
    q_idx = []
    for q in qs:
        img = q.get('image')
        q_idx.append(items.add(f'{d}/{img}' if img else None, q.get('text', '')))
    return names, qs, g, q_idx


def custom_check(ml, model, work, d, built, items):
    names, qs, g, q_idx = built
    out = f'{work}/custom-out'
    res = json.loads(ec.run_eval(ml, model, 'custom', d, out).stdout)
    ranks = {r['query']: r for r in ec.rankings(out)}
    absn = [os.path.realpath(f'{d}/{n}') for n in names]
    sums = {m: 0.0 for m in ('R@1', 'R@5', 'R@10', 'R@50', 'mAP@5', 'mAP@10', 'mAP@25',
                             'mAP@50')}
    for q, qi in zip(qs, q_idx):
        if q['id'] == 'q-missing-target':
            if ranks[q['id']]['status'] == 'ok':
                failures.append('custom: a target missing from the gallery is not reported')
            continue
        if 'image' in q:
            s = items.E[g] @ items.E[qi]
        else:
            s = items.img[g] @ items.txt[qi]
        o = order(s, absn)
        if 'image' in q:
            o = [x for x in o if x != os.path.realpath(f'{d}/{q["image"]}')]
        if ranks[q['id']]['ranking'] != o[:len(ranks[q['id']]['ranking'])]:
            failures.append(f'custom {q["id"]}: ranking differs')
        tg = [os.path.realpath(f'{d}/{t}') for t in q['targets']]
        for k in (1, 5, 10, 50):
            sums[f'R@{k}'] += any(t in o[:k] for t in tg)
        for k in (5, 10, 25, 50):
            sums[f'mAP@{k}'] += ec.ap_at_k(o, tg, k)
    n = len(qs)
    ec.check_metrics('custom', res, {'custom': {m: 100 * v / n for m, v in sums.items()}})
    t = res['tasks'][0]
    if t['queries'] != n or t['unscored'] != 1 or t['instructions_truncated'] != 1:
        failures.append(f'custom counts: {t["queries"]} queries, {t["unscored"]} unscored, '
                        f'{t["instructions_truncated"]} truncated')


# ---- bad input ------------------------------------------------------------------

def check_errors(ml, model, work):
    d = f'{work}/bad2'
    ec.dump(f'{d}/focus_attribute.json', [{'reference': {'image_id': '1', 'instance_bbox': [1, 2]},
                                           'target': {'image_id': '2', 'instance_bbox': [0, 0, 1, 1]},
                                           'gallery': [], 'condition': 'color'}])
    r = ec.run_eval(ml, model, 'genecis', d, f'{work}/bad2-out', expect_ok=False)
    if r.returncode != 1 or 'focus_attribute.json: entry 0' not in r.stderr:
        failures.append(f'genecis bad box: rc {r.returncode}, {r.stderr.strip()}')
    d = f'{work}/bad3'
    os.makedirs(d, exist_ok=True)
    with open(f'{d}/imgnet_real_query.txt', 'w') as f:
        f.write('imgnet/real/n1/a.JPEG 2\nthis line has no label\n')
    with open(f'{d}/imgnet_targets.txt', 'w') as f:
        f.write('imgnet/imagenet-r/n1/toy_0.jpg 2002\n')
    r = ec.run_eval(ml, model, 'dtin', d, f'{work}/bad3-out', expect_ok=False)
    if r.returncode != 1 or 'imgnet_real_query.txt:2' not in r.stderr:
        failures.append(f'dtin bad line: rc {r.returncode}, {r.stderr.strip()}')
    d = f'{work}/bad4'
    image(f'{d}/gallery/x.png')
    with open(f'{d}/queries.jsonl', 'w') as f:
        f.write('{"id": "a", "text": "x", "targets": ["gallery/x.png"]}\n{"id": \n')
    r = ec.run_eval(ml, model, 'custom', d, f'{work}/bad4-out', expect_ok=False)
    if r.returncode != 1 or 'queries.jsonl:2' not in r.stderr:
        failures.append(f'custom bad line: rc {r.returncode}, {r.stderr.strip()}')


def main():
    ml, model, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    items = Items()
    dirs = {n: f'{work}/{n}' for n in ('dtin', 'genecis', 't2i', 'custom')}
    for p in dirs.values():
        os.makedirs(p, exist_ok=True)
    built = {'dtin': dtin_build(dirs['dtin'], items),
             'genecis': genecis_build(dirs['genecis'], items, work),
             't2i': t2i_build(dirs['t2i'], items),
             'custom': custom_build(dirs['custom'], items)}
    items.embed(model, work)
    dtin_check(ml, model, work, dirs['dtin'], built['dtin'], items)
    genecis_check(ml, model, work, dirs['genecis'], built['genecis'], items)
    t2i_check(ml, model, work, dirs['t2i'], built['t2i'], items)
    custom_check(ml, model, work, dirs['custom'], built['custom'], items)
    check_errors(ml, model, work)
    for f in failures:
        print('FAIL', f)
    if failures:
        sys.exit(1)
    print('eval: dtin, genecis (4 tasks, crops), t2i, custom agree with the reference')


if __name__ == '__main__':
    main()
