#!/usr/bin/python3
"""A reference training run in PyTorch (float64), to check `magiclens train`
end to end: data order, preprocessing, tokenisation, the contrastive loss
with query negatives and learned temperature, gradient clipping, the
warm-up + cosine schedule and torch.optim.AdamW with decay / no-decay groups.

  train_torch_ref.py --model M.pkl --data triplets.jsonl --steps K --batch B
      --lr LR --warmup W --seed S --train fusion|all --c-run DIR [--tol T]

Trains K steps from M in float64, then compares with the C run in DIR
(log.jsonl losses; final.mlens weights: each tensor's update, final minus
initial, against the reference update).  Written from docs/training.md and
torch's own optimiser, not from the C code.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import magiclens_ref as ref  # noqa: E402
from compare_train import read_mlens  # noqa: E402

M64 = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def epoch_order(n, seed, epoch):
    s = (seed * 0x9E3779B97F4A7C15 + epoch) & M64
    perm = list(range(n))
    for i in range(n, 1, -1):
        s, z = splitmix64(s)
        j = (z * i) >> 64
        perm[i - 1], perm[j] = perm[j], perm[i - 1]
    return perm


def lr_at(lr, warmup, total, step, min_ratio=0.0):
    if step < warmup:
        return lr * (step + 1) / warmup
    span = total - 1 - warmup
    if span <= 0:
        return lr
    p = min(1.0, (step - warmup) / span)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def no_decay(name, ndim):
    last = name.rsplit("/", 1)[-1]
    return (ndim <= 1 or last in ("bias", "b", "scale") or "embedding" in name
            or "pooling_attn_query" in name or "per_dim_scale" in name)


def leaves(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from leaves(v, prefix + k + "/")
        else:
            yield prefix + k, v


def main():
    ap = argparse.ArgumentParser()
    for k in ("model", "data", "c_run", "vocab"):
        ap.add_argument("--" + k.replace("_", "-"), dest=k, default=None)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", default="fusion")
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--clip-norm", type=float, default=1.0)
    ap.add_argument("--tol", type=float, default=2e-3)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=0.0)
    a = ap.parse_args()

    params = ref.load_checkpoint(a.model)
    m = ref.MagicLensRef(params)
    named = dict(leaves(m.p))
    init = {k: v.detach().clone() for k, v in named.items()}
    S = m.config["image_size"]
    tok = ref.Tokenizer(a.vocab or os.environ["MAGICLENS_VOCAB"])
    folder = os.path.dirname(os.path.abspath(a.data))
    trip = [json.loads(l) for l in open(a.data) if l.strip()]

    def pixels(p):
        return ref.preprocess(ref.load_image(os.path.join(folder, p)), S)

    if a.temperature > 0:  # fixed: log(1/T), not trained
        with torch.no_grad():
            named["clip/logit_scale"].fill_(math.log(1 / a.temperature))
        init["clip/logit_scale"] = named["clip/logit_scale"].detach().clone()
    train = [k for k in named if a.train == "all" or not k.startswith("clip/")
             or (k == "clip/logit_scale" and a.temperature <= 0)]
    for k in train:
        named[k].requires_grad_(True)
    groups = [{"params": [named[k] for k in train if not no_decay(k, named[k].dim())],
               "weight_decay": a.weight_decay},
              {"params": [named[k] for k in train if no_decay(k, named[k].dim())],
               "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.98), eps=1e-6)
    epoch, index, perm, losses = 0, 0, epoch_order(len(trip), a.seed, 0), []
    empty = torch.tensor([tok.tokenize("")], dtype=torch.long)
    def next_batch():
        nonlocal epoch, index, perm
        batch = []
        for _ in range(a.batch):
            if index >= len(trip):
                epoch, index = epoch + 1, 0
                perm = epoch_order(len(trip), a.seed, epoch)
            batch.append(trip[perm[index]])
            index += 1
        return batch

    def micro_loss(batch):
        qpx = torch.from_numpy(np.stack([pixels(t["query_image"]) for t in batch]))
        tpx = torch.from_numpy(np.stack([pixels(t["target_image"]) for t in batch]))
        ids = torch.tensor([tok.tokenize(t["instruction"], truncate=True) for t in batch])
        qimg, timg = m.encode_image(qpx), m.encode_image(tpx)
        txt, etxt = m.encode_text(ids), m.encode_text(empty).expand(len(batch), -1)
        q, t, qn = m.fuse(qimg, txt), m.fuse(timg, etxt), m.fuse(qimg, etxt)
        s = torch.clamp(torch.exp(named["clip/logit_scale"]), max=100.0)
        logits = s * (q @ torch.cat([t, qn]).T)
        return torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))

    for step in range(a.steps):
        opt.zero_grad()
        total = 0.0
        for _ in range(a.accum):  # gradient accumulation: the mean of micro-batch losses
            loss = micro_loss(next_batch())
            (loss / a.accum).backward()
            total += float(loss) / a.accum
        torch.nn.utils.clip_grad_norm_([named[k] for k in train], a.clip_norm)
        for g in opt.param_groups:
            g["lr"] = lr_at(a.lr, a.warmup, a.steps, step)
        opt.step()
        losses.append(total)

    c_losses = [json.loads(l)["loss"] for l in open(a.c_run + "/log.jsonl") if '"loss"' in l]
    print("reference losses", " ".join("%.6f" % x for x in losses))
    print("C losses        ", " ".join("%.6f" % x for x in c_losses))
    assert len(c_losses) == len(losses)
    for i, (x, y) in enumerate(zip(losses, c_losses)):
        assert abs(x - y) <= 1e-4 * max(1, abs(x)), "step %d: loss %.7f vs C %.7f" % (i + 1, x, y)
    cw = read_mlens(a.c_run + "/final.mlens")
    worst, checked = ("", 0.0), 0
    for k in named:
        ref_upd = (named[k].detach() - init[k]).numpy().reshape(-1)
        c_upd = cw[k].astype(np.float64).reshape(-1) - init[k].numpy().reshape(-1)
        if k not in train:
            # unchanged up to float32 rounding (a fixed temperature's log(1/T))
            limit = 1e-6 * max(1.0, float(np.abs(init[k].numpy()).max()))
            assert np.abs(c_upd).max() <= limit, "%s is frozen but changed" % k
            continue
        # Key biases get no gradient at all (softmax ignores a shift shared by
        # every key), so both sides move them only by rounding noise that Adam
        # normalises; they are left out, everything else must agree.
        if k.endswith(("key/b", "key/bias")):
            continue
        # Relative to the update, or to one full Adam step (lr per element)
        # where the net update is smaller than that (steps that cancel).
        scale = max(np.linalg.norm(ref_upd), a.lr * math.sqrt(ref_upd.size))
        err = np.linalg.norm(c_upd - ref_upd) / scale
        checked += 1
        if err > worst[1]:
            worst = (k, err)
        assert err <= a.tol, "%s: update differs by %.3g (relative)" % (k, err)
    print("C training equals the PyTorch reference: %d steps, %d trained tensors, worst update "
          "difference %.2g (%s)" % (a.steps, checked, worst[1], worst[0]))


if __name__ == "__main__":
    main()
