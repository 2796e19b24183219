#!/usr/bin/python3
"""Checks `magiclens index` + `search` + `export` against a brute-force
ranking computed from the float64 PyTorch reference (ref_embed.py).

usage: check_index.py ML_BINARY MODEL.pkl WORKDIR FIXTURES_DIR

The gallery is the fixture set's good images spread over nested folders,
plus its broken files (which must be reported and skipped).  Every query
kind is checked: image + instruction, image alone, text alone (CLIP towers),
--like ID (with and without text), --offset, --min-score, path prefix,
--store f16/int8 (float32 re-ranking), --json, and `export`.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 2e-5  # float32 engine vs float64 reference, scores in [-1, 1]


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"FAILED ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return r


def ref_embed(model, items, work, name):
    path = os.path.join(work, name + '.jsonl')
    with open(path, 'w') as f:
        for i, it in enumerate(items):
            f.write(json.dumps(dict(id=i, **it)) + '\n')
    out, clip = os.path.join(work, name + '.npy'), os.path.join(work, name + '.clip.npy')
    run(['/usr/bin/python3', os.path.join(HERE, 'ref_embed.py'), '--model', model,
         '--input', path, '--output', out, '--clip-out', clip])
    return np.load(out), np.load(clip)


def normed(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def check_ranking(label, results, ids, scores_ref, k, offset=0, allowed=None, min_score=None):
    """results: C output list of {rank,id,path,score}; scores_ref: float64
    score of every gallery item (by position in ids)."""
    pos = {int(i): p for p, i in enumerate(ids)}
    cand = [p for p in range(len(ids)) if allowed is None or allowed[p]]
    order = sorted(cand, key=lambda p: -scores_ref[p])
    want = order[offset:offset + k]
    if min_score is not None:
        want = [p for p in want if scores_ref[p] >= min_score - TOL]
    if abs(len(results) - len(want)) > 0 and min_score is None:
        sys.exit(f"{label}: {len(results)} results, expected {len(want)}")
    seen = set()
    for j, r in enumerate(results):
        p = pos.get(r['id'])
        if p is None or p in seen:
            sys.exit(f"{label}: unknown or repeated id {r['id']}")
        seen.add(p)
        if r['rank'] != offset + j + 1:
            sys.exit(f"{label}: rank {r['rank']} at position {j}")
        if abs(r['score'] - scores_ref[p]) > TOL:
            sys.exit(f"{label}: id {r['id']} score {r['score']} vs reference {scores_ref[p]}")
        # Position j must hold the (offset+j)-th best score (ties in any order).
        if abs(scores_ref[p] - scores_ref[order[offset + j]]) > TOL:
            sys.exit(f"{label}: rank {offset + j + 1} is id {r['id']} ({scores_ref[p]:.6f}); "
                     f"the reference ranks {scores_ref[order[offset + j]]:.6f} there")
        if allowed is not None and not allowed[p]:
            sys.exit(f"{label}: id {r['id']} violates the filter")
    if min_score is not None:
        exp = [p for p in order[offset:offset + k] if scores_ref[p] >= min_score + TOL]
        if len(results) < len(exp) or any(r['score'] < min_score for r in results):
            sys.exit(f"{label}: --min-score not applied correctly")
    print(f"ok  {label}: {len(results)} results")


def main():
    ml, model, work, fixtures = sys.argv[1:5]
    ml = os.path.abspath(ml)
    gal = os.path.join(work, 'gallery')
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(gal, 'a', 'deep'))
    os.makedirs(os.path.join(gal, 'b'))
    good = open(os.path.join(fixtures, 'good.txt')).read().split()
    bad = open(os.path.join(fixtures, 'bad.txt')).read().split()
    for i, name in enumerate(good):
        sub = ['a', 'a/deep', 'b'][i % 3]
        shutil.copy(os.path.join(fixtures, name), os.path.join(gal, sub, name))
    for name in bad[:4]:
        shutil.copy(os.path.join(fixtures, name), os.path.join(gal, 'b', name))
    with open(os.path.join(gal, 'notes.txt'), 'w') as f:  # not an image: ignored in folders
        f.write('hello\n')

    index = os.path.join(work, 'x.mlindex')
    r = run([ml, 'index', '--model', model, '--precision', 'fp32', '--images', gal,
             '--output', index, '--batch', '5'])
    skipped = [ln for ln in r.stderr.splitlines() if ln.startswith('skipped: ')]
    nbad = sum(1 for b in bad[:4] if b.lower().endswith(('.jpg', '.jpeg', '.png', '.webp', '.gif')))
    if len(skipped) != nbad:
        sys.exit(f"expected {nbad} skipped images, got:\n{r.stderr}")
    exp = os.path.join(work, 'export')
    run([ml, 'export', '--index', index, '--output', exp])
    meta = [json.loads(ln) for ln in open(os.path.join(exp, 'metadata.jsonl'))]
    if len(meta) != len(good):
        sys.exit(f"index holds {len(meta)} items, expected {len(good)}")
    ids = [m['id'] for m in meta]
    paths = [m['path'] for m in meta]
    gallery, gclip = ref_embed(model, [{'image': p} for p in paths], work, 'gallery')

    # export: embeddings as the reference computes them
    e = np.load(os.path.join(exp, 'embeddings.npy'))
    c = np.load(os.path.join(exp, 'clip_embeddings.npy'))
    if e.shape != gallery.shape or np.abs(e - gallery).max() > 1e-4:
        sys.exit(f"export embeddings differ from the reference: {np.abs(e - gallery).max()}")
    if np.abs(c - normed(gclip[:, 0])).max() > 1e-4:
        sys.exit("exported CLIP embeddings differ from the reference")
    print(f"ok  export: {e.shape[0]} x {e.shape[1]}, max diff {np.abs(e - gallery).max():.2e}")

    qimg = os.path.join(fixtures, good[0])
    queries = [{'image': qimg, 'text': 'the same chair in a living room'},
               {'image': qimg},
               {'image': paths[3], 'text': 'make it red'},
               {'image': paths[3], 'text': 'a dog'}]
    qemb, qclip = ref_embed(model, queries, work, 'queries')
    gnorm = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)

    def search(*args):
        out = run([ml, 'search', '--index', index, '--model', model, '--precision', 'fp32',
                   '--json'] + list(args)).stdout
        return json.loads(out)['results']

    n = len(ids)
    s0 = gnorm @ qemb[0]
    check_ranking('image+text', search('--image', qimg, '--text', queries[0]['text'], '-k', '10'),
                  ids, s0, 10)
    check_ranking('image only', search('--image', qimg, '-k', '7'), ids, gnorm @ qemb[1], 7)
    check_ranking('all results', search('--image', qimg, '-k', str(n + 5)), ids, gnorm @ qemb[1], n)
    st = normed(gclip[:, 0]) @ normed(qclip[0, 1])
    check_ranking('text only (CLIP)', search('--text', queries[0]['text'], '-k', '10'), ids, st, 10)
    like = ids[3]
    allowed = np.array([i != like for i in ids])
    check_ranking('--like ID + text', search('--like', str(like), '--text', 'make it red', '-k', '8'),
                  ids, gnorm @ qemb[2], 8, allowed=allowed)
    check_ranking('--like ID', search('--like', str(like), '-k', '5'), ids, gnorm @ gallery[3], 5,
                  allowed=allowed)
    check_ranking('--offset', search('--image', qimg, '--text', queries[0]['text'], '-k', '5',
                                     '--offset', '6'), ids, s0, 5, offset=6)
    thr = float(np.sort(s0)[-6])
    check_ranking('--min-score', search('--image', qimg, '--text', queries[0]['text'], '-k', '20',
                                        '--min-score', repr(thr)), ids, s0, 20, min_score=thr)
    prefix = os.path.join(os.path.realpath(gal), 'a') + '/'
    allowed = np.array([p.startswith(prefix) for p in paths])
    check_ranking('--prefix', search('--image', qimg, '--text', queries[0]['text'], '-k', '6',
                                     '--prefix', prefix), ids, s0, 6, allowed=allowed)
    for store in ('f16', 'int8'):
        check_ranking(f'--store {store}', search('--image', qimg, '--text', queries[0]['text'],
                                                 '-k', '10', '--store', store), ids, s0, 10)
    # The plain-text output carries the same ranking.
    txt = run([ml, 'search', '--index', index, '--model', model, '--precision', 'fp32',
               '--image', qimg, '-k', '3']).stdout.splitlines()
    js = search('--image', qimg, '-k', '3')
    if [ln.split('\t')[2] for ln in txt] != [str(r['id']) for r in js]:
        sys.exit(f"text output differs from --json:\n{txt}\n{js}")
    print("ok  text output")


if __name__ == '__main__':
    main()
