#!/usr/bin/python3
"""Reference MagicLens embeddings (float64) for a JSONL list of items.

  ref_embed.py --model X.pkl --input items.jsonl --output ref.npy
               [--vocab V] [--clip-out clip.npy] [--tokens-out tokens.json]
               [--truncate] [--batch N] [--threads N]

items.jsonl: one JSON object a line, {"id": ..., "image": "path", "text": "..."};
text absent / null / "" -> empty instruction; relative image paths resolve
against the JSONL file's folder.
Output: float64 [N, D] normalised MagicLens embeddings (a NaN row for an item
whose image cannot be opened).  --clip-out: float64 [N, 2, E], [:, 0] = CLIP
image embedding, [:, 1] = CLIP text embedding (both un-normalised; NaN image row
if the image failed).  --tokens-out: JSON list of {"id", "tokens"} (77 ids).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import magiclens_ref as ml  # noqa: E402

VOCAB_NAME = 'bpe_simple_vocab_16e6.txt.gz'


def default_vocab():
    env = os.environ.get('MAGICLENS_VOCAB')
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for c in (os.path.join('..', 'shared', 'assets', VOCAB_NAME),
              os.path.join(here, '..', '..', '..', 'shared', 'assets', VOCAB_NAME),
              os.path.join(here, VOCAB_NAME)):
        if os.path.exists(c):
            return c
    return os.path.join('..', 'shared', 'assets', VOCAB_NAME)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--model', required=True)
    ap.add_argument('--input', required=True)
    ap.add_argument('--output', required=True)
    ap.add_argument('--vocab', default=None)
    ap.add_argument('--clip-out')
    ap.add_argument('--tokens-out')
    ap.add_argument('--truncate', action='store_true',
                    help='truncate over-long texts to SOT + 75 tokens + EOT (default: error)')
    ap.add_argument('--batch', type=int, default=16, help='images per vision-tower batch')
    ap.add_argument('--threads', type=int, default=0)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    t0 = time.time()
    params = ml.load_checkpoint(a.model)
    model = ml.MagicLensRef(params)
    del params
    cfg = model.config
    tok = ml.Tokenizer(a.vocab or default_vocab())
    t1 = time.time()

    base = os.path.dirname(os.path.abspath(a.input))
    items = []
    with open(a.input, encoding='utf-8') as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            items.append(json.loads(line))
    N = len(items)
    D = cfg['embed_dim']

    # tokens (unique texts through the text tower once)
    tokens = []
    for it in items:
        text = it.get('text') or ''
        try:
            tokens.append(tok.tokenize(text, truncate=a.truncate))
        except ValueError as e:
            sys.exit('ref_embed: item %r: %s' % (it.get('id'), e))
    uniq = {}
    for tk in tokens:
        uniq.setdefault(tuple(tk), len(uniq))
    with torch.no_grad():
        txt_u = model.encode_text(np.array(list(uniq.keys()), dtype=np.int64))
    txt = torch.stack([txt_u[uniq[tuple(tk)]] for tk in tokens]) if N else torch.zeros(0, D)

    # images
    img = torch.full((N, D), float('nan'), dtype=torch.float64)
    ok = []
    pend_idx, pend_px = [], []

    def flush():
        if not pend_idx:
            return
        with torch.no_grad():
            e = model.encode_image(np.stack(pend_px))
        for j, i in enumerate(pend_idx):
            img[i] = e[j]
        pend_idx.clear()
        pend_px.clear()

    for i, it in enumerate(items):
        p = it.get('image')
        try:
            if not p:
                raise ValueError('no image')
            path = p if os.path.isabs(p) else os.path.join(base, p)
            px = ml.preprocess(ml.load_image(path), cfg['image_size'])
        except Exception as e:  # noqa: BLE001 - any decode failure -> NaN row
            print('ref_embed: item %r: cannot open image %r: %s' % (it.get('id'), p, e),
                  file=sys.stderr)
            continue
        ok.append(i)
        pend_idx.append(i)
        pend_px.append(px)
        if len(pend_idx) >= a.batch:
            flush()
    flush()

    out = np.full((N, D), np.nan, dtype=np.float64)
    if ok:
        with torch.no_grad():
            e = model.fuse(img[ok], txt[ok])
        out[ok] = e.numpy()
    np.save(a.output, out)
    if a.clip_out:
        np.save(a.clip_out, torch.stack([img, txt], dim=1).numpy() if N
                else np.zeros((0, 2, D)))
    if a.tokens_out:
        with open(a.tokens_out, 'w') as f:
            json.dump([{'id': it.get('id'), 'tokens': tk} for it, tk in zip(items, tokens)], f)
    t2 = time.time()
    print('ref_embed: %d items (%d images ok), load %.1fs, compute %.1fs'
          % (N, len(ok), t1 - t0, t2 - t1), file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
