#!/usr/bin/python3
"""PyTorch autograd reference for MagicLens training (float64).

The forward pass is magiclens_ref.MagicLensRef (written independently of
the C code from the official JAX/Flax sources); every gradient here comes
from torch autograd, never from the C implementation.

  train_ref.py make --model M.pkl --out DIR [--vocab V] [--n 3] [--seed S]
      writes the batch (DIR/pixels.npy [2N, S*S*3] float32, DIR/ids.npy
      [N+1, 77] float64, DIR/plan.npy [3N, 2] float64: (image, text) of each
      output -- N queries (image i, instruction i), N targets (image N+i,
      ""), N query negatives (image i, "")), copies the model to
      DIR/model.pkl, and writes the reference DIR/ref.npz: loss, embeddings
      and the gradient of every parameter.
  train_ref.py compare --dir DIR --mode all|frozen|cached
      compares DIR/MODE/{grad.npy, params.tsv, loss.npy, emb.npy} written by
      `test_train --grad DIR MODE` with DIR/ref.npz; exits 1 on a mismatch.

The loss is MagicLens' contrastive loss: query i scores
s * <q_i, t_j> for every target and s * <q_i, qn_j> for every query
negative, s = min(exp(logit_scale), 100); the loss is the mean
cross-entropy with t_i as the positive.
"""
import argparse
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import magiclens_ref as ref  # noqa: E402

INSTRUCTIONS = [
    'find a red one like this',
    'make it wow!"$ bigger',  # "!" followed by punctuation: id 0 inside the text
    'the same dog at night in the snow',
    'show it from above',
    'a painting of it',
]

GRAD_RTOL = 1e-3
LOSS_RTOL = 1e-5


def leaves(tree, prefix=''):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from leaves(v, prefix + k + '/')
        else:
            yield prefix + k, v


def contrastive_loss(q, t, qn, log_scale):
    s = torch.clamp(torch.exp(log_scale), max=100.0)
    logits = s * (q @ torch.cat([t, qn], 0).T)
    target = torch.arange(q.shape[0])
    loss = torch.nn.functional.cross_entropy(logits, target)
    acc = (logits.argmax(1) == target).double().mean()
    return loss, acc


def make(a):
    os.makedirs(a.out, exist_ok=True)
    shutil.copyfile(a.model, os.path.join(a.out, 'model.pkl'))
    params = ref.load_checkpoint(a.model)
    m = ref.MagicLensRef(params)
    cfg = m.config
    N, S = a.n, cfg['image_size']
    rng = np.random.default_rng(a.seed)
    # Preprocessed (normalised) pixels: any float32 values will do.
    pixels = rng.standard_normal((2 * N, S, S, 3)).astype(np.float32)
    tok = ref.Tokenizer(a.vocab)
    texts = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(N)] + ['']
    ids = np.array([tok.tokenize(t) for t in texts], dtype=np.int64)
    if N >= 2:
        row = list(ids[1])
        eot = row.index(tok.EOT)
        assert 0 in row[:eot], 'expected token id 0 inside instruction 1: %r' % row[:eot]
    plan = np.array([(i, i) for i in range(N)] + [(N + i, N) for i in range(N)]
                    + [(i, N) for i in range(N)], dtype=np.float64)
    np.save(os.path.join(a.out, 'pixels.npy'), pixels.reshape(2 * N, -1))
    np.save(os.path.join(a.out, 'ids.npy'), ids.astype(np.float64))
    np.save(os.path.join(a.out, 'plan.npy'), plan)

    named = dict(leaves(m.p))
    if 'clip/logit_scale' not in named:  # the C side creates it the same way
        m.p['clip']['logit_scale'] = torch.tensor(np.log(1 / 0.07), dtype=ref.DT)
        named['clip/logit_scale'] = m.p['clip']['logit_scale']
    for v in named.values():
        v.requires_grad_(True)
    img = m.encode_image(torch.from_numpy(pixels.astype(np.float64)))
    txt = m.encode_text(ids)
    pi, pt = plan[:, 0].astype(np.int64), plan[:, 1].astype(np.int64)
    emb = m.fuse(img[pi], txt[pt])
    raw = max(float(l.abs().max()) for l in m.last_logits)
    loss, acc = contrastive_loss(emb[:N], emb[N:2 * N], emb[2 * N:], named['clip/logit_scale'])
    loss.backward()
    out = {'__loss': np.array(float(loss)), '__acc': np.array(float(acc)),
           '__emb': emb.detach().numpy()}
    for k, v in named.items():
        g = v.grad if v.grad is not None else torch.zeros_like(v)
        out[k] = g.detach().numpy()
    np.savez(os.path.join(a.out, 'ref.npz'), **out)
    print('reference: N=%d loss %.7f accuracy %.3f, largest fusion/pool logit %.1f (cap 50)'
          % (N, float(loss), float(acc), raw))


def group(name):
    if name.startswith('clip/visual/'):
        return 'vision'
    if name.startswith('clip/text/'):
        return 'text'
    if name == 'clip/logit_scale':
        return 'logit_scale'
    if name.startswith('multimodal_encoder/'):
        return 'fusion'
    return 'pooler'


def compare(a):
    r = np.load(os.path.join(a.dir, 'ref.npz'))
    d = os.path.join(a.dir, a.mode)
    g = np.load(os.path.join(d, 'grad.npy')).reshape(-1).astype(np.float64)
    loss, dls, acc = np.load(os.path.join(d, 'loss.npy')).reshape(-1)
    emb = np.load(os.path.join(d, 'emb.npy'))
    rows = [l.rstrip('\n').split('\t') for l in open(os.path.join(d, 'params.tsv'))]
    layout = {n: (int(o), int(c)) for n, o, c, _ in rows}
    bad = []
    ref_names = [k for k in r.files if not k.startswith('__')]
    if sorted(layout) != sorted(ref_names):
        bad.append('parameter names differ: only C %s, only ref %s'
                   % (sorted(set(layout) - set(ref_names))[:5],
                      sorted(set(ref_names) - set(layout))[:5]))
    rl = float(r['__loss'])
    if abs(loss - rl) > LOSS_RTOL * abs(rl):
        bad.append('loss %.8f vs reference %.8f' % (loss, rl))
    if acc != float(r['__acc']):
        bad.append('accuracy %g vs reference %g' % (acc, float(r['__acc'])))
    e = np.abs(emb - r['__emb']).max()
    if e > 1e-5:
        bad.append('embeddings differ by %.3g' % e)
    trained = {'vision', 'text', 'fusion', 'pooler', 'logit_scale'} if a.mode == 'all' \
        else {'fusion', 'pooler', 'logit_scale'}
    # Some gradients are zero in exact arithmetic (a CLIP attention key bias
    # adds the same amount to every logit of a query, which softmax
    # ignores; float64 leaves ~1e-15).  For them a relative error means
    # nothing: the C value must instead be float32 noise, under 1e-6 of the
    # largest gradient norm.
    scale = max(np.linalg.norm(r[k]) for k in ref_names)
    worst, zero = {}, []
    for name in ref_names:
        if name not in layout:
            continue
        off, cnt = layout[name]
        gr = r[name].reshape(-1)
        gc = g[off:off + cnt]
        if gc.size != gr.size:
            bad.append('%s: %d elements, reference %d' % (name, gc.size, gr.size))
            continue
        grp = group(name)
        if grp in trained and np.linalg.norm(gr) < 1e-12 * scale:
            err = np.linalg.norm(gc) / scale
            if err > 1e-6:
                bad.append('%s: zero in exact arithmetic, C gives %.3g of the largest gradient'
                           % (name, err))
            zero.append((err, name))
            continue
        if grp in trained:
            err = np.linalg.norm(gc - gr) / max(np.linalg.norm(gr), 1e-30)
            if err > GRAD_RTOL:
                bad.append('%s: relative error %.3g (|g_ref| %.3g)' % (name, err, np.linalg.norm(gr)))
        else:  # frozen: the C side must leave it exactly zero
            err = float(np.abs(gc).max())
            if err != 0:
                bad.append('%s: frozen but gradient %.3g' % (name, err))
        if err >= worst.get(grp, (-1, ''))[0]:
            worst[grp] = (err, name)
    print('%s: loss %.7f (ref %.7f), emb max diff %.2g, d log_scale %.6g' % (a.mode, loss, rl, e, dls))
    for grp in sorted(worst):
        err, name = worst[grp]
        kind = 'max rel err' if grp in trained else 'frozen, max |g|'
        print('  %-12s %-16s %.3g  (%s)' % (grp, kind, err, name))
    if zero:
        print('  %d gradients zero in exact arithmetic: C at most %.2g of the largest norm (%s)'
              % (len(zero), max(zero)[0], max(zero)[1]))
    if bad:
        print('MISMATCH (%d):' % len(bad))
        for b in bad[:40]:
            print('  ' + b)
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    m = sub.add_parser('make')
    m.add_argument('--model', required=True)
    m.add_argument('--out', required=True)
    m.add_argument('--vocab', default=os.environ.get('MAGICLENS_VOCAB'))
    m.add_argument('--n', type=int, default=3)
    m.add_argument('--seed', type=int, default=1)
    c = sub.add_parser('compare')
    c.add_argument('--dir', required=True)
    c.add_argument('--mode', required=True, choices=['all', 'frozen', 'cached'])
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.cmd == 'make':
        make(a)
        return 0
    return compare(a)


if __name__ == '__main__':
    sys.exit(main())
