#!/usr/bin/python3
"""The MagicLens training step in PyTorch, for speed comparison with
`magiclens train` (bench/train_bench.sh runs both).

Same computation as the C trainer: CLIP towers (pre-LN blocks, quick_gelu,
causal text mask, EOT pooling), 4 fusion layers (LayerNorm with 1+scale,
tanh-capped attention over [image, text]), attention pooling, L2 norm, the
one-directional contrastive loss with query negatives and a learned
temperature, AdamW.  Random weights (speed only), float32 or bf16 autocast.

  train_torch.py --size base|tiny --mode fusion|all --batch B --steps N [--threads T] [--bf16]

fusion: towers frozen, their outputs precomputed (what --train fusion with
the tower cache does per step); all: full backpropagation.  Prints
triplets/s over the steps after the first (warm-up).
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SIZES = {
    # image, patch, vision width/layers, text width/layers/heads, embed D
    "tiny": (64, 16, 128, 2, 64, 2, 2, 64),
    "base": (224, 16, 768, 12, 512, 12, 8, 512),
}


class Block(nn.Module):
    def __init__(self, w, heads):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(w), nn.LayerNorm(w)
        self.qkv, self.out = nn.Linear(w, 3 * w), nn.Linear(w, w)
        self.fc, self.proj = nn.Linear(w, 4 * w), nn.Linear(4 * w, w)
        self.heads = heads

    def forward(self, x, mask=None):
        b, t, w = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
        if mask is not None:
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        a = logits.softmax(-1) @ v
        x = x + self.out(a.transpose(1, 2).reshape(b, t, w))
        h = self.fc(self.ln_2(x))
        return x + self.proj(h * torch.sigmoid(1.702 * h))


class Tower(nn.Module):
    def __init__(self, w, layers, heads, d):
        super().__init__()
        self.blocks = nn.ModuleList(Block(w, heads) for _ in range(layers))
        self.ln, self.proj = nn.LayerNorm(w), nn.Linear(w, d, bias=False)


class Vision(Tower):
    def __init__(self, image, patch, w, layers, d):
        super().__init__(w, layers, w // 64 if w >= 64 else 2, d)
        self.conv = nn.Conv2d(3, w, patch, patch, bias=False)
        self.cls = nn.Parameter(torch.randn(w) * 0.02)
        self.pos = nn.Parameter(torch.randn((image // patch) ** 2 + 1, w) * 0.02)
        self.ln_pre = nn.LayerNorm(w)

    def forward(self, px):
        x = self.conv(px).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], 1) + self.pos
        x = self.ln_pre(x)
        for b in self.blocks:
            x = b(x)
        return self.proj(self.ln(x[:, 0]))


class Text(Tower):
    def __init__(self, w, layers, heads, d):
        super().__init__(w, layers, heads, d)
        self.tok = nn.Embedding(49408, w)
        self.pos = nn.Parameter(torch.randn(77, w) * 0.01)

    def forward(self, ids):
        x = self.tok(ids) + self.pos
        mask = torch.ones(77, 77, dtype=torch.bool).tril()
        mask = mask & (ids > 0)[:, None, None, :]
        for b in self.blocks:
            x = b(x, mask)
        x = self.ln(x)
        return self.proj(x[torch.arange(ids.shape[0]), ids.argmax(-1)])


class LN1(nn.Module):  # MagicLens' LayerNorm: (1 + scale), eps 1e-6
    def __init__(self, d):
        super().__init__()
        self.scale, self.bias = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], 1 + self.scale, self.bias, 1e-6)


def capped_attention(q, k, v, scale):
    logits = 50 * torch.tanh((q * scale) @ k.transpose(-1, -2) / 50)
    return logits.softmax(-1) @ v


class FusionLayer(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln, self.ff_ln = LN1(d), LN1(d)
        self.qkv, self.post = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = capped_attention(q, k, v, q.shape[-1] ** -0.5)
        x = x + self.post(a.transpose(1, 2).reshape(b, t, d))
        return x + self.ff2(F.relu(self.ff1(self.ff_ln(x))))


class Fusion(nn.Module):
    def __init__(self, d):
        super().__init__()
        heads = max(1, d // 64)
        self.layers = nn.ModuleList(FusionLayer(d, heads) for _ in range(4))
        self.q, self.kv = nn.Linear(d, 4 * d), nn.Linear(d, 8 * d)
        self.post, self.ln = nn.Linear(4 * d, d), LN1(d)
        self.query = nn.Parameter(torch.randn(1, d) / math.sqrt(d))
        self.per_dim = nn.Parameter(torch.zeros(4 * d // heads))
        self.heads = heads

    def forward(self, img, txt):
        x = torch.stack([img, txt], 1)
        for l in self.layers:
            x = l(x)
        b = x.shape[0]
        q = self.q(self.query).view(1, self.heads, 1, -1)
        k, v = self.kv(x).view(b, 2, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        scale = 1.442695041 / math.sqrt(q.shape[-1]) * F.softplus(self.per_dim)
        a = capped_attention(q, k, v, scale).reshape(b, -1)
        return F.normalize(self.ln(self.post(a)), dim=-1)


def contrastive(q, t, qn, log_scale):
    s = log_scale.exp().clamp(max=100)
    logits = s * q @ torch.cat([t, qn]).T
    return F.cross_entropy(logits, torch.arange(q.shape[0]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="base", choices=SIZES)
    ap.add_argument("--mode", default="fusion", choices=["fusion", "all"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bf16", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    image, patch, vw, vl, tw, tl, th, d = SIZES[a.size]
    vision, text, fusion = Vision(image, patch, vw, vl, d), Text(tw, tl, th, d), Fusion(d)
    log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = list(fusion.parameters()) + [log_scale]
    if a.mode == "all":
        params += list(vision.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)
    B = a.batch
    ids = torch.zeros(B + 1, 77, dtype=torch.long)
    ids[:, 0] = 49406
    ids[:, 1:8] = torch.randint(1, 49000, (B + 1, 7))
    ids[:, 8] = 49407
    ids[B, 1:] = 0
    ids[B, 1] = 49407  # the empty instruction
    px = torch.randn(2 * B, 3, image, image)
    with torch.no_grad():
        cached_img, cached_txt = vision(px), text(ids)
    times = []
    for step in range(a.steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            if a.mode == "all":
                img, txt = vision(px), text(ids)
            else:
                img, txt = cached_img, cached_txt
            qimg, timg = img[:B], img[B:]
            empty = txt[B:].expand(B, -1)
            q = fusion(qimg, txt[:B])
            t = fusion(timg, empty)
            qn = fusion(qimg, empty)
            loss = contrastive(q.float(), t.float(), qn.float(), log_scale)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    steady = times[1:] if len(times) > 1 else times
    per = sorted(steady)[len(steady) // 2]
    print("pytorch %s %s batch %d: %.3f s/step (median of %d), %.1f triplets/s, loss %.4f"
          % (a.size, a.mode, B, per, len(steady), B / per, loss.item()))


if __name__ == "__main__":
    main()
