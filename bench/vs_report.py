#!/usr/bin/python3
"""Helper of bench/vs_pytorch.sh (not meant to be run by hand).

  vs_report.py items FIXTURES OUTDIR NREF NGALLERY NQUERIES   write the JSONL item lists
  vs_report.py jpegs OUTDIR N                                 N JPEGs of 640x480 + list
  vs_report.py torch-acc MODEL.pkl ITEMS.jsonl REF.npy        PyTorch fp32/bf16 vs float64
  vs_report.py cosine C.npy REF.npy [ITEMS]                        worst cosine (JSON)
  vs_report.py overlap GAL_A.npy Q_A.npy GAL_B.npy Q_B.npy K  top-K overlap of B vs A (JSON)
  vs_report.py table OUTDIR                                   results.jsonl -> table.md
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'reference'))

INSTRUCTIONS = [
    'inside view of this building', 'the same dish, but raw ingredients',
    'a photo of this at night', 'the same object in red', 'a drawing of this',
    'this, seen from above', 'a close-up of the texture', 'the same scene in winter',
    'a toy version of this', 'this animal swimming', 'the logo of this brand',
    'a crowd in front of this', 'the same chair in a living room', 'an old photograph of this',
    'this but much smaller', 'two of these side by side',
]
# degenerate fixtures (tiny / flat images) make ties in a ranking: keep them out
# of the accuracy set and the query set (they stay in the gallery).
FLAT = {'png_black.png', 'png_1x1.png', 'png_dark.png', 'png_small_50x37.png'}


def write_jsonl(path, rows):
    with open(path, 'w') as f:
        for r in rows:
            f.write(json.dumps(r) + '\n')


def cmd_items(fx, out, nref, ngal, nq):
    nref, ngal, nq = int(nref), int(ngal), int(nq)
    good = [l.strip() for l in open(os.path.join(fx, 'good.txt')) if l.strip()]
    fxa = os.path.abspath(fx)
    normal = [g for g in good if g not in FLAT]
    acc = [{'id': 'g%d' % i, 'image': os.path.join(fxa, n)} for i, n in enumerate(normal[:nref])]
    acc += [{'id': 'q%d' % i, 'image': os.path.join(fxa, n), 'text': INSTRUCTIONS[i % len(INSTRUCTIONS)]}
            for i, n in enumerate(normal[nref:2 * nref] if len(normal) >= 2 * nref else normal[:nref])]
    write_jsonl(os.path.join(out, 'acc.jsonl'), acc)
    gal = [{'id': n, 'image': os.path.join(fxa, n)} for n in good[:ngal]]
    write_jsonl(os.path.join(out, 'gallery.jsonl'), gal)
    qs = [{'id': 'q%d' % i, 'image': os.path.join(fxa, normal[(3 * i) % len(normal)]),
           'text': INSTRUCTIONS[i % len(INSTRUCTIONS)]} for i in range(nq)]
    write_jsonl(os.path.join(out, 'queries.jsonl'), qs)


def cmd_jpegs(out, n):
    from PIL import Image
    import make_images as mi
    n = int(n)
    os.makedirs(out, exist_ok=True)
    rows = []
    for i in range(n):
        p = os.path.join(out, 'img%03d.jpg' % i)
        if not os.path.exists(p):
            Image.fromarray(mi.pattern(640, 480, 1000 + i), 'RGB').save(p, quality=90)
        rows.append({'id': 'img%03d' % i, 'image': p})
    write_jsonl(os.path.join(out, 'all.jsonl'), rows)
    write_jsonl(os.path.join(out, 'first8.jsonl'), rows[:8])


def cos_rows(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def cmd_cosine(c, ref, items=None):
    a, r = np.load(c), np.load(ref)
    if a.shape != r.shape:
        print(json.dumps({'error': 'shape %s vs %s' % (a.shape, r.shape)}))
        return 1
    cs = cos_rows(a, r)
    cs = np.where(np.isfinite(cs), cs, -1.0)  # a failed (NaN) row counts as the worst
    out = {'worst_cos': float(cs.min()), 'mean_cos': float(cs.mean()), 'n': int(len(cs))}
    if items:
        q = np.array([bool(json.loads(l).get('text')) for l in open(items) if l.strip()])
        if (~q).any():
            out['gallery'] = float(cs[~q].min())
        if q.any():
            out['queries'] = float(cs[q].min())
    print(json.dumps(out))
    return 0


def cmd_torch_acc(model, items, ref):
    """Gallery items only (empty instruction), which is what torch_model implements."""
    import torch
    import magiclens_ref as ml
    import torch_model as tm
    torch.set_num_threads(2)
    rows = [json.loads(l) for l in open(items) if l.strip()]
    idx = [i for i, r in enumerate(rows) if not r.get('text')]
    P = ml.load_checkpoint(model)
    res = {}
    for name, kw in (('fp32', dict(dtype=torch.float32)), ('bf16', dict(dtype=torch.bfloat16)),
                     ('bf16-autocast', dict(dtype=torch.float32, autocast=True))):
        m = tm.TorchMagicLens(P, **kw)
        px = np.stack([ml.preprocess(ml.load_image(rows[i]['image']), m.image_size) for i in idx])
        e = m.embed_images(torch.from_numpy(px).permute(0, 3, 1, 2).float().contiguous()).double().numpy()
        cs = cos_rows(e, np.load(ref)[idx])
        res[name] = float(cs.min())
    print(json.dumps(res))
    return 0


def cmd_overlap(ga, qa, gb, qb, k):
    k = int(k)
    GA, QA, GB, QB = (np.load(p).astype(np.float64) for p in (ga, qa, gb, qb))
    sa, sb = QA @ GA.T, QB @ GB.T
    ov = []
    for i in range(len(sa)):
        ta = set(np.argsort(-sa[i], kind='stable')[:k])
        tb = set(np.argsort(-sb[i], kind='stable')[:k])
        ov.append(len(ta & tb) / k)
    top1 = float(np.mean(np.argmax(sa, 1) == np.argmax(sb, 1)))
    print(json.dumps({'mean_overlap': float(np.mean(ov)), 'min_overlap': float(np.min(ov)),
                      'top1_agree': top1, 'queries': len(ov), 'gallery': len(GA), 'k': k}))
    return 0


# ---------------------------------------------------------------- table
def fmt(x, f='%.2f'):
    return 'n/a' if x is None else f % x


def cmd_table(out):
    R = {}
    for l in open(os.path.join(out, 'results.jsonl')):
        if l.strip():
            o = json.loads(l)
            R[o['key']] = o
    meta = R.get('meta', {})

    def rate(key):
        o = R.get(key) or {}
        return o.get('images_per_s')

    torch_fp32 = {k: rate(k) for k in R if k.startswith('torch_fp32') and rate(k)}
    best_fp32_key = max(torch_fp32, key=torch_fp32.get) if torch_fp32 else None
    best_fp32 = torch_fp32.get(best_fp32_key) if best_fp32_key else None
    torch_bf16 = {k: rate(k) for k in ('torch_bf16', 'torch_bf16_autocast') if rate(k)}
    best_bf16_key = max(torch_bf16, key=torch_bf16.get) if torch_bf16 else None
    best_bf16 = torch_bf16.get(best_bf16_key) if best_bf16_key else None
    tacc = R.get('torch_acc', {})
    acc = {p: (R.get('acc_' + p) or {}) for p in ('fp32', 'bf16', 'int8')}

    L = []
    L.append('# MagicLens base image path: C engine vs PyTorch')
    L.append('')
    L.append('- date: %s' % meta.get('date', '?'))
    L.append('- CPU: %s, %s CPUs; ISA: %s' % (meta.get('cpu', '?'), meta.get('ncpu', '?'),
                                             meta.get('isa_flags', '?')))
    L.append('- load average at start: %s (the numbers are noisy when this is above ~0.5)'
             % meta.get('loadavg', '?'))
    L.append('- tree: %s; C binary: %s' % (meta.get('git', '?'), meta.get('bin', '?')))
    L.append('- torch %s; system libblas.so.3 -> %s; OpenBLAS: %s; OpenBLAS default core: %s'
             % (meta.get('torch', '?'), meta.get('system_blas', '?'), meta.get('openblas', 'n/a'),
                meta.get('openblas_core', 'n/a')))
    L.append('- torch bf16 oneDNN: %s' % meta.get('onednn', '?'))
    L.append('- model: random base checkpoint (make_checkpoint.py --size base --seed 5), '
             'batch %s, %s threads, image path (image + empty instruction), %s s per timing'
             % (meta.get('batch', 8), meta.get('threads', 2), meta.get('seconds', '?')))
    L.append('')
    L.append('| implementation | precision | images/s | ms/image | ratio | accuracy (worst cosine vs float64) |')
    L.append('|---|---|---|---|---|---|')
    labels = [('torch_fp32_system', 'PyTorch, system BLAS (%s)' % meta.get('system_blas_short', '?')),
              ('torch_fp32_openblas', 'PyTorch, OpenBLAS default core (%s)' % meta.get('openblas_core', '?')),
              ('torch_fp32_openblas_skx', 'PyTorch, OpenBLAS OPENBLAS_CORETYPE=SkylakeX')]
    for key, lab in labels:
        if key in R:
            r = rate(key)
            mark = ' (best)' if key == best_fp32_key else ''
            L.append('| %s%s | fp32 | %s | %s | %s | %s |' % (
                lab, mark, fmt(r), fmt(1000 / r if r else None, '%.1f'),
                fmt(r / best_fp32 if r and best_fp32 else None, '%.2fx') + ' of best',
                fmt(tacc.get('fp32'), '%.7f') + ' (gallery)'))
    for key, lab, ak in (('torch_bf16', 'PyTorch, model.to(torch.bfloat16)', 'bf16'),
                         ('torch_bf16_autocast', "PyTorch, torch.autocast('cpu', bfloat16)", 'bf16-autocast')):
        if key in R:
            r = rate(key)
            mark = ' (best)' if key == best_bf16_key else ''
            L.append('| %s%s | bf16 | %s | %s | %s | %s |' % (
                lab, mark, fmt(r), fmt(1000 / r if r else None, '%.1f'),
                fmt(r / best_bf16 if r and best_bf16 else None, '%.2fx') + ' of best',
                fmt(tacc.get(ak), '%.6f') + ' (gallery)'))
    c_rows = sorted(k for k in R if k.startswith('c_'))
    for key in c_rows:
        o = R[key]
        prec = o.get('precision_req')
        r = o.get('images_per_s')
        base = best_fp32 if prec == 'fp32' else best_bf16
        basename = 'PyTorch fp32 best' if prec == 'fp32' else 'PyTorch bf16 best'
        a = acc.get(prec, {})
        accs = 'n/a' if not a.get('worst_cos') else '%.6f (gallery %.6f, queries %.6f)' % (
            a['worst_cos'], a.get('gallery', float('nan')), a.get('queries', float('nan')))
        isa = o.get('isa') or o.get('isa_req') or '?'
        L.append('| C magiclens, isa %s | %s | %s | %s | %s | %s |' % (
            isa, prec, fmt(r), fmt(1000 / r if r else None, '%.1f'),
            (fmt(r / base, '%.2fx') + ' vs ' + basename) if r and base else 'n/a',
            accs if (o.get('default_isa')) else ''))
    L.append('')

    # targets
    def c_default(prec):
        for k in c_rows:
            if R[k].get('precision_req') == prec and R[k].get('default_isa'):
                return R[k].get('images_per_s')
        return None
    cf, cb, ci = c_default('fp32'), c_default('bf16'), c_default('int8')
    skx = rate('torch_fp32_openblas_skx')
    ret = {p: R.get('overlap_' + p) or {} for p in ('bf16', 'int8')}
    mem = {p: R.get('rss_' + p) or {} for p in ('fp32', 'bf16', 'int8')}
    wbytes = meta.get('weights_bytes')

    def verdict(ok):
        return 'n/a' if ok is None else ('PASS' if ok else 'FAIL')

    def ratio(a, b):
        return a / b if a and b else None
    def rounds(prec):  # ratios of the paired rounds, in round order
        rs = sorted((o for k, o in R.items() if k.startswith('round_') and o.get('precision') == prec),
                    key=lambda o: o['round'])
        return [o['ratio'] for o in rs if o.get('ratio')]

    def judged(main, prec, target):
        # the main pass and the paired rounds: the median is what is judged
        rs = rounds(prec)
        allr = sorted(([main] if main else []) + rs)
        if not allr:
            return None, 'n/a'
        n = len(allr)
        med = allr[n // 2] if n % 2 else (allr[n // 2 - 1] + allr[n // 2]) / 2
        txt = 'main pass %s' % fmt(main, '%.2fx')
        if rs:
            txt += '; paired rounds %s; **median %.2fx** (%d runs, range %.2f-%.2fx)' % (
                ', '.join('%.2fx' % r for r in rs), med, n, allr[0], allr[-1])
        return med >= target, txt
    T = []
    r1 = ratio(cf, best_fp32)
    r1s = ratio(cf, skx)
    ok1, txt1 = judged(r1, 'fp32', 1.6)
    T.append(('C fp32 >= 1.6x PyTorch fp32 at its best', '%s (main pass vs OpenBLAS SkylakeX: %s)'
              % (txt1, fmt(r1s, '%.2fx')), verdict(ok1)))
    r2 = ratio(cb, best_bf16)
    ok2, txt2 = judged(r2, 'bf16', 2.5)
    T.append(('C bf16 >= 2.5x PyTorch bf16', txt2, verdict(ok2)))
    wb = acc['bf16'].get('worst_cos')
    T.append(('C bf16 worst cosine vs float64 >= 0.999', fmt(wb, '%.6f'), verdict(None if wb is None else wb >= 0.999)))
    T.append(('C int8 faster than C bf16', '%s vs %s img/s' % (fmt(ci), fmt(cb)),
              verdict(None if not (ci and cb) else ci > cb)))
    wi = acc['int8'].get('worst_cos')
    T.append(('C int8 worst cosine vs float64 >= 0.995', fmt(wi, '%.6f'), verdict(None if wi is None else wi >= 0.995)))
    oi = ret['int8'].get('mean_overlap')
    T.append(('C int8 top-10 overlap with C fp32 >= 0.9 (%s queries, %s gallery)'
              % (ret['int8'].get('queries', '?'), ret['int8'].get('gallery', '?')),
              '%s (min %s; bf16: %s)' % (fmt(oi, '%.3f'), fmt(ret['int8'].get('min_overlap'), '%.1f'),
                                         fmt(ret['bf16'].get('mean_overlap'), '%.3f')),
              verdict(None if oi is None else oi >= 0.9)))
    for p in ('fp32', 'bf16', 'int8'):
        m = mem[p].get('max_rss_kb')
        if m and wbytes:
            extra = m * 1024 - wbytes
            T.append(('peak RSS of embed (%s, batch 8) <= weights + 400 MB' % p,
                      '%.0f MB = weights %.0f MB + %.0f MB' % (m * 1024 / 1e6, wbytes / 1e6, extra / 1e6),
                      verdict(extra <= 400e6)))
        else:
            T.append(('peak RSS of embed (%s, batch 8) <= weights + 400 MB' % p, 'n/a', 'n/a'))
    for p in ('fp32', 'bf16', 'int8'):
        e = R.get('e2e_' + p) or {}
        if e.get('rate_total') and e.get('model_only'):
            rm = e['rate_marginal'] / e['model_only'] if e.get('rate_marginal') else None
            rt = e['rate_total'] / e['model_only']
            T.append(('end-to-end embed of %d JPEGs (%s) within 10%% of model-only' % (e.get('n', 0), p),
                      '%.2f img/s steady (%s of bench %.2f); %.2f img/s incl. load (%.2f)'
                      % (e['rate_marginal'] or 0, fmt(rm, '%.2f'), e['model_only'], e['rate_total'], rt),
                      verdict(None if rm is None else rm >= 0.9)))
        else:
            T.append(('end-to-end embed (%s) within 10%% of model-only' % p, 'n/a', 'n/a'))
    L.append('| target | measured | verdict |')
    L.append('|---|---|---|')
    for t in T:
        L.append('| %s | %s | %s |' % t)
    L.append('')
    rr = sorted((o for k, o in R.items() if k.startswith('round_')), key=lambda o: (o['round'], o['precision']))
    if rr:
        L.append('Paired rounds (the fastest PyTorch variant, then the C engine, back to back; %s s each):'
                 % meta.get('seconds', '?'))
        L.append('')
        L.append('| round | precision | PyTorch (%s) | C | ratio |' % ', '.join(sorted({o['torch_key'] for o in rr})))
        L.append('|---|---|---|---|---|')
        for o in rr:
            L.append('| %d | %s | %s | %s | %.2fx |' % (o['round'], o['precision'], fmt(o['torch']), fmt(o['c']),
                                                        o['ratio']))
        L.append('')
    L.append('Ratios: C fp32 rows vs the fastest PyTorch fp32 row; C bf16 and int8 rows vs the '
             'fastest PyTorch bf16 row. Accuracy: worst cosine over %s items (gallery = image + '
             'empty instruction, queries = image + instruction) vs the float64 reference '
             '(tests/reference/ref_embed.py); PyTorch accuracy is on the gallery items only.'
             % acc['fp32'].get('n', '?'))
    L.append('')
    txt = '\n'.join(L) + '\n'
    with open(os.path.join(out, 'table.md'), 'w') as f:
        f.write(txt)
    print(txt)
    return 0


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = {'items': cmd_items, 'jpegs': cmd_jpegs, 'torch-acc': cmd_torch_acc,
          'cosine': cmd_cosine, 'overlap': cmd_overlap, 'table': cmd_table}.get(cmd)
    if fn is None:
        sys.exit(__doc__)
    return fn(*args) or 0


if __name__ == '__main__':
    sys.exit(main())
