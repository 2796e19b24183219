#!/usr/bin/python3
"""Times the PyTorch MagicLens image path (bench/torch_model.py).

  torch_bench.py --model X.pkl [--dtype float32|bfloat16] [--autocast]
                 [--batch 8] [--threads 2] [--seconds 20] [--warmup 2]

Prints one JSON line, like `magiclens bench`:
  {"images_per_s", "ms_per_image", "precision", "threads", "batch", "impl": "pytorch", ...}
Inputs are random normalised [B, 3, S, S] float32 tensors (the model cost does not
depend on the values); the dtype cast of the input is inside the timed region.
Warm-up batches first, then whole batches until --seconds have passed.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_model as tm  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', required=True)
    ap.add_argument('--dtype', choices=['float32', 'bfloat16'], default='float32')
    ap.add_argument('--autocast', action='store_true',
                    help='bfloat16 via torch.autocast("cpu") over float32 weights')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--seconds', type=float, default=20.0)
    ap.add_argument('--warmup', type=int, default=1, help='warm-up batches')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    t0 = time.time()
    params = tm.ml.load_checkpoint(a.model)
    dtype = torch.bfloat16 if a.dtype == 'bfloat16' else torch.float32
    model = tm.TorchMagicLens(params, dtype, autocast=a.autocast)
    del params
    load_s = time.time() - t0

    g = torch.Generator().manual_seed(0)
    S = model.image_size
    px = torch.randn(a.batch, 3, S, S, generator=g)
    for _ in range(a.warmup):
        model.embed_images(px)
    n, t = 0, time.perf_counter()
    t_end = t + a.seconds
    while True:
        e = model.embed_images(px)
        n += 1
        now = time.perf_counter()
        if now >= t_end:
            break
    el = now - t
    ok = bool(torch.isfinite(e).all())
    rate = n * a.batch / el
    prec = 'bf16-autocast' if a.autocast else ('bf16' if dtype == torch.bfloat16 else 'fp32')
    out = {'images_per_s': round(rate, 3), 'ms_per_image': round(1000.0 / rate, 2),
           'precision': prec, 'threads': torch.get_num_threads(), 'batch': a.batch,
           'impl': 'pytorch', 'torch': torch.__version__, 'batches': n,
           'seconds': round(el, 2), 'load_s': round(load_s, 1), 'finite': ok,
           'openblas_coretype': os.environ.get('OPENBLAS_CORETYPE', ''),
           'libs': tm.blas_in_use()}
    print(json.dumps(out))
    sys.stdout.flush()
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
