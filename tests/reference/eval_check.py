#!/usr/bin/python3
"""End-to-end check of `magiclens eval` on miniature benchmarks.

  eval_check.py MAGICLENS MODEL.pkl WORKDIR

Writes miniature CIRR, CIRCO and FashionIQ benchmarks in exactly the layouts
their repositories ship (entry structure as in ../shared/benchmarks), with
generated images; runs `magiclens eval` on them; computes every metric
independently from float64 reference embeddings (ref_embed.py) with numpy,
following the official evaluation code (CIRR: reference removed from the
ranking, Recall_subset over img_set minus the reference; CIRCO: mAP@k over
gt_img_ids divided by min(k, |G|); FashionIQ: Recall@10/50, captions joined
by " and "), and compares.  Also checks the test-split submission files and
that bad input gives an error naming the file.
"""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
RNG = np.random.default_rng(5)


def image(path):
    """A distinct random picture: blocky noise, so no two images tie."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    small = RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(small).resize((48, 40), Image.NEAREST).save(path)


def dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f)


# ---- miniature benchmarks -------------------------------------------------

def make_cirr(d, split, names, queries, missing=()):
    """queries: (pairid, ref, target or None, caption, members)."""
    folder = 'dev' if split == 'val' else 'test1'
    dump(f'{d}/image_splits/split.rc2.{split}.json', {n: f'./{folder}/{n}.png' for n in names})
    caps = []
    for pid, ref, tgt, cap, members in queries:
        e = {'pairid': pid, 'reference': ref}
        if tgt is not None:
            e['target_hard'] = tgt
            e['target_soft'] = {tgt: 1.0}
        e['caption'] = cap
        e['img_set'] = {'id': pid % 7, 'members': members, 'reference_rank': members.index(ref)}
        if tgt is not None:
            e['img_set']['target_rank'] = members.index(tgt)
        caps.append(e)
    dump(f'{d}/captions/cap.rc2.{split}.json', caps)
    for n in names:
        if n not in missing:
            image(f'{d}/{folder}/{n}.png')


def cirr_data(d):
    names = [f'dev-{i}-{i % 4}-img{i % 2}' for i in range(14)]
    caps = ['show three bottles of soft drink', 'Fewer paper towels per pack', 'make it night',
            'the dog is now a cat', 'add a person riding it', 'remove the background',
            'two of them', 'in a forest']
    qs = []
    for i, cap in enumerate(caps):
        members = [names[(i + j) % 14] for j in range(6)]
        qs.append((12060 + i, members[0], members[(i % 5) + 1], cap, members))
    # the reference image of the last query is missing from disk
    make_cirr(d, 'val', names, qs, missing={names[7]})
    tnames = [f'test1-{i}-0-img{i % 2}' for i in range(10)]
    tq = []
    for i in range(4):
        members = [tnames[(i + j) % 10] for j in range(6)]
        tq.append((20000 + i, members[2], None, caps[i], members))
    make_cirr(d, 'test1', tnames, tq)
    return names, qs, {names[7]}


def circo_data(d):
    ids = [100000 + 37 * i for i in range(16)]
    base = f'{d}/COCO2017_unlabeled'
    dump(f'{base}/annotations/image_info_unlabeled2017.json',
         {'info': {}, 'licenses': [],
          'images': [{'license': 1, 'file_name': f'{i:012d}.jpg', 'coco_url': '', 'height': 40,
                      'width': 48, 'date_captured': '', 'flickr_url': '', 'id': i} for i in ids]})
    for i in ids:
        image(f'{base}/unlabeled2017/{i:012d}.jpg')
    val = []
    for q in range(6):
        gts = [ids[(q * 3 + j) % 16] for j in range(1 + q % 3)]
        val.append({'reference_img_id': ids[(q * 5 + 7) % 16], 'target_img_id': gts[0],
                    'relative_caption': f'has {q + 2} more colourful things',
                    'shared_concept': f'a thing number {q}', 'gt_img_ids': gts, 'id': q,
                    'semantic_aspects': ['cardinality']})
    dump(f'{d}/annotations/val.json', val)
    test = [{'reference_img_id': ids[q], 'relative_caption': 'is sitting on the ground',
             'shared_concept': 'a person', 'id': q} for q in range(3)]
    dump(f'{d}/annotations/test.json', test)
    return ids, val


def fiq_data(d):
    out = {}
    for c, cat in enumerate(('dress', 'shirt', 'toptee')):
        asins = [f'B00{c}{i:05d}X' for i in range(12)]
        for a in asins:
            image(f'{d}/images/{a}.png')
        dump(f'{d}/image_splits/split.{cat}.val.json', asins)
        caps = [{'target': asins[(q * 5 + 1) % 12], 'candidate': asins[q],
                 'captions': [f'is {cat} number {q}', 'fit and flare']} for q in range(5)]
        dump(f'{d}/captions/cap.{cat}.val.json', caps)
        out[cat] = (asins, caps)
    return out


# ---- reference embeddings -------------------------------------------------

def ref_embed(model, work, name, items):
    inp = f'{work}/{name}.jsonl'
    with open(inp, 'w') as f:
        for i, (img, text) in enumerate(items):
            f.write(json.dumps({'id': str(i), 'image': img, 'text': text}) + '\n')
    out = f'{work}/{name}.npy'
    subprocess.run([sys.executable, f'{HERE}/ref_embed.py', '--model', model, '--input', inp,
                    '--output', out], check=True, stdout=subprocess.DEVNULL)
    return np.load(out)


def run_eval(ml, model, bench, data, out, split='val', expect_ok=True):
    r = subprocess.run([ml, 'eval', bench, '--data', data, '--model', model, '--split', split,
                        '--output', out, '--json', '--quiet', '--precision', 'fp32',
                        '--batch', '4'], capture_output=True, text=True)
    if expect_ok and r.returncode != 0:
        sys.exit(f'eval {bench} failed ({r.returncode}): {r.stderr}')
    return r


def rankings(out):
    with open(f'{out}/rankings.jsonl') as f:
        return [json.loads(line) for line in f]


def ap_at_k(ranked, gts, k):
    labels = np.isin(np.array(ranked[:50], dtype=object), np.array(gts, dtype=object)).astype(float)
    prec = np.cumsum(labels) * labels / np.arange(1, len(labels) + 1)
    return float(np.sum(prec[:k]) / min(len(gts), k))


failures = []


def close(name, got, want, tol=1e-6):
    if abs(got - want) > tol:
        failures.append(f'{name}: magiclens {got} vs reference {want}')


def check_metrics(bench, res, want):
    for task, metrics in want.items():
        got = next(t for t in res['tasks'] if t['task'] == task)['metrics']
        for m, v in metrics.items():
            close(f'{bench} {task} {m}', got[m], v)


def check_cirr(ml, model, work, d):
    names, qs, missing = cirr_data(d)
    avail = [n for n in names if n not in missing]
    G = ref_embed(model, work, 'cirr_g', [(f'{d}/dev/{n}.png', '') for n in avail])
    Q = ref_embed(model, work, 'cirr_q', [(f'{d}/dev/{q[1]}.png', q[3]) for q in qs
                                         if q[1] not in missing])
    sums = {k: 0.0 for k in ('R@1', 'R@5', 'R@10', 'R@50', 'Rsubset@1', 'Rsubset@2', 'Rsubset@3')}
    out = f'{work}/cirr-out'
    res = json.loads(run_eval(ml, model, 'cirr', d, out).stdout)
    ranks = {r['query']: r for r in rankings(out)}
    qi = 0
    for pid, ref, tgt, cap, members in qs:
        if ref in missing:
            if ranks[str(pid)]['status'] == 'ok':
                failures.append(f'cirr {pid}: missing reference image not reported')
            continue
        s = G @ Q[qi]
        qi += 1
        order = [avail[i] for i in np.argsort(-s, kind='stable') if avail[i] != ref]
        if ranks[str(pid)]['ranking'][:len(order)] != order[:50]:
            failures.append(f'cirr {pid}: ranking differs')
        for k in (1, 5, 10, 50):
            sums[f'R@{k}'] += float(tgt in order[:k])
        sub = [n for n in order if n in members]
        for k in (1, 2, 3):
            sums[f'Rsubset@{k}'] += float(tgt in sub[:k])
    want = {k: 100 * v / len(qs) for k, v in sums.items()}
    check_metrics('cirr', res, {'val': want})
    t = res['tasks'][0]
    if t['queries'] != len(qs) or t['scored'] != len(qs) - 1 or t['unscored'] != 1 \
            or t['gallery_missing'] != 1:
        failures.append(f'cirr counts: {t}')
    # test split: the two submission files of the CIRR server
    out = f'{work}/cirr-test'
    res = json.loads(run_eval(ml, model, 'cirr', d, out, split='test').stdout)
    with open(f'{out}/recall_submission_cirr_test1.json') as f:
        sub = json.load(f)
    with open(f'{out}/recall_subset_submission_cirr_test1.json') as f:
        subs = json.load(f)
    if sub.get('version') != 'rc2' or sub.get('metric') != 'recall' or len(sub) != 6:
        failures.append(f'cirr recall submission layout: {list(sub)[:4]}')
    if subs.get('version') != 'rc2' or subs.get('metric') != 'recall_subset' or len(subs) != 6:
        failures.append(f'cirr recall_subset submission layout: {list(subs)[:4]}')
    for pid in ('20000', '20001', '20002', '20003'):
        if len(sub.get(pid, [])) != 9 or len(subs.get(pid, [])) != 3:
            failures.append(f'cirr submission {pid}: {sub.get(pid)} {subs.get(pid)}')


def check_circo(ml, model, work, d):
    ids, val = circo_data(d)
    base = f'{d}/COCO2017_unlabeled/unlabeled2017'
    G = ref_embed(model, work, 'circo_g', [(f'{base}/{i:012d}.jpg', '') for i in ids])
    Q = ref_embed(model, work, 'circo_q', [
        (f"{base}/{q['reference_img_id']:012d}.jpg",
         f"find {q['shared_concept']} but {q['relative_caption']}") for q in val])
    out = f'{work}/circo-out'
    res = json.loads(run_eval(ml, model, 'circo', d, out).stdout)
    sums = {k: 0.0 for k in (5, 10, 25, 50)}
    ranks = {r['query']: r for r in rankings(out)}
    for qi, q in enumerate(val):
        order = [ids[i] for i in np.argsort(-(G @ Q[qi]), kind='stable')]
        if [int(x) for x in ranks[str(q['id'])]['ranking']] != order:
            failures.append(f"circo {q['id']}: ranking differs")
        for k in sums:
            sums[k] += ap_at_k(order, q['gt_img_ids'], k)
    check_metrics('circo', res, {'val': {f'mAP@{k}': 100 * v / len(val) for k, v in sums.items()}})
    out = f'{work}/circo-test'
    run_eval(ml, model, 'circo', d, out, split='test')
    with open(f'{out}/circo_test_submission.json') as f:
        sub = json.load(f)
    if sorted(sub) != ['0', '1', '2'] or any(len(v) != 16 or not all(isinstance(x, int) for x in v)
                                             for v in sub.values()):
        failures.append(f'circo submission layout: {sub}')


def check_fiq(ml, model, work, d):
    data = fiq_data(d)
    out = f'{work}/fiq-out'
    res = json.loads(run_eval(ml, model, 'fiq', d, out).stdout)
    want = {}
    for cat, (asins, caps) in data.items():
        G = ref_embed(model, work, f'fiq_{cat}_g', [(f'{d}/images/{a}.png', '') for a in asins])
        Q = ref_embed(model, work, f'fiq_{cat}_q', [(f"{d}/images/{c['candidate']}.png",
                                                     ' and '.join(c['captions'])) for c in caps])
        r10 = r50 = 0.0
        for qi, c in enumerate(caps):
            order = [asins[i] for i in np.argsort(-(G @ Q[qi]), kind='stable')]
            r10 += c['target'] in order[:10]
            r50 += c['target'] in order[:50]
        want[cat] = {'R@10': 100 * r10 / len(caps), 'R@50': 100 * r50 / len(caps)}
    check_metrics('fiq', res, want)
    for m in ('R@10', 'R@50'):
        close(f'fiq average {m}', res['average'][m], np.mean([w[m] for w in want.values()]))


def check_errors(ml, model, work):
    d = f'{work}/bad'
    dump(f'{d}/captions/cap.rc2.val.json', [])
    os.makedirs(f'{d}/image_splits', exist_ok=True)
    with open(f'{d}/image_splits/split.rc2.val.json', 'w') as f:
        f.write('{"dev-1": "./dev/dev-1.png",')
    r = run_eval(ml, model, 'cirr', d, f'{work}/bad-out', expect_ok=False)
    if r.returncode != 1 or 'split.rc2.val.json' not in r.stderr:
        failures.append(f'malformed JSON: rc {r.returncode}, {r.stderr.strip()}')
    r = run_eval(ml, model, 'circo', f'{work}/nowhere', f'{work}/bad-out', expect_ok=False)
    if r.returncode != 1 or 'nowhere' not in r.stderr:
        failures.append(f'missing data: rc {r.returncode}, {r.stderr.strip()}')
    r = run_eval(ml, model, 'nosuch', d, f'{work}/bad-out', expect_ok=False)
    if r.returncode != 1 or 'unknown benchmark' not in r.stderr:
        failures.append(f'unknown benchmark: rc {r.returncode}, {r.stderr.strip()}')


def main():
    ml, model, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    check_cirr(ml, model, work, f'{work}/cirr')
    check_circo(ml, model, work, f'{work}/circo')
    check_fiq(ml, model, work, f'{work}/fiq')
    check_errors(ml, model, work)
    for f in failures:
        print('FAIL', f)
    if failures:
        sys.exit(1)
    print('eval: cirr, circo, fiq metrics and submissions agree with the reference')


if __name__ == '__main__':
    main()
