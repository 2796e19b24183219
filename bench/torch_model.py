#!/usr/bin/python3
"""Efficient PyTorch implementation of the MagicLens IMAGE path, the baseline
that bench/vs_pytorch.sh times the C engine against.

  vision tower (conv patch embedding, 12 pre-LN blocks, ln_post, proj)
  + the empty-instruction CLIP text embedding, computed ONCE at load
  + 4 MagicLens fusion layers + attention pooling + L2 normalisation.

Written the way a competent PyTorch user would: weights read once with
tests/reference/magiclens_ref.load_checkpoint, converted once to torch tensors
of the target dtype in nn.Linear layout ([out, in]), q/k/v fused into one
matmul, F.conv2d for the patches, F.layer_norm, batched multi-head attention
with torch.matmul + softmax, quick_gelu, everything under inference_mode.

  TorchMagicLens(params, dtype=torch.float32|torch.bfloat16, autocast=False)
      .embed_images(px)   px: [B, 3, S, S] (NCHW, normalised) -> [B, D] float32
  python3 bench/torch_model.py --model base.pkl --check N
      checks float32 output against the float64 reference on N fixture-like images
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'reference'))
import magiclens_ref as ml  # noqa: E402

SOT, EOT = 49406, 49407


def _count(params, prefix):
    """Number of consecutive '<prefix><n>/' groups in the flat parameter dict."""
    n = 0
    while any(k.startswith(prefix + '%d/' % n) for k in params):
        n += 1
    return n


class _Block:
    """CLIP residual attention block, weights in [out, in] layout, q/k/v fused."""

    def __init__(self, P, pre, cvt):
        g = lambda n: P[pre + n]  # noqa: E731
        W, H, hd = g('attn/query/kernel').shape
        self.H, self.hd = H, hd
        wq = np.concatenate([g('attn/%s/kernel' % n).reshape(W, H * hd)
                             for n in ('query', 'key', 'value')], axis=1)
        self.w_qkv = cvt(wq.T)                                     # [3W, W]
        self.b_qkv = cvt(np.concatenate([g('attn/%s/bias' % n).reshape(-1)
                                         for n in ('query', 'key', 'value')]))
        self.w_out = cvt(g('attn/out/kernel').reshape(H * hd, -1).T)  # [W, H*hd]
        self.b_out = cvt(g('attn/out/bias'))
        self.ln1 = (cvt(g('ln_1/scale')), cvt(g('ln_1/bias')))
        self.ln2 = (cvt(g('ln_2/scale')), cvt(g('ln_2/bias')))
        self.w_fc = cvt(g('mlp/c_fc/kernel').T)
        self.b_fc = cvt(g('mlp/c_fc/bias'))
        self.w_proj = cvt(g('mlp/c_proj/kernel').T)
        self.b_proj = cvt(g('mlp/c_proj/bias'))
        self.width = W

    def __call__(self, x, mask=None):
        B, L, W = x.shape
        h = _ln(x, (W,), self.ln1[0], self.ln1[1], 1e-5)
        qkv = F.linear(h, self.w_qkv, self.b_qkv)                     # [B, L, 3*H*hd]
        qkv = qkv.view(B, L, 3, self.H, self.hd).permute(2, 0, 3, 1, 4)  # [3, B, H, L, hd]
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.matmul(q * (self.hd ** -0.5), k.transpose(-1, -2))  # [B, H, L, L]
        if mask is not None:
            att = att.masked_fill(~mask, torch.finfo(att.dtype).min)
        att = torch.softmax(att, dim=-1)
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, L, self.H * self.hd)
        x = x + F.linear(o, self.w_out, self.b_out)
        h = _ln(x, (W,), self.ln2[0], self.ln2[1], 1e-5)
        h = F.linear(h, self.w_fc, self.b_fc)
        h = h * torch.sigmoid(1.702 * h)                              # quick_gelu
        return x + F.linear(h, self.w_proj, self.b_proj)


class _MMAttention:
    """MagicLens DotProductAttention: w [D, N, Hd] for q/k/v, post w [D, N, Hd]."""

    def __init__(self, P, pre, cvt, per_dim_scale):
        D, N, hd = P[pre + 'query/w'].shape
        self.N, self.hd = N, hd
        self.wq = cvt(P[pre + 'query/w'].reshape(D, N * hd).T)
        self.bq = cvt(P[pre + 'query/b'].reshape(-1))
        wkv = np.concatenate([P[pre + n + '/w'].reshape(D, N * hd) for n in ('key', 'value')], 1)
        self.wkv = cvt(wkv.T)
        self.bkv = cvt(np.concatenate([P[pre + n + '/b'].reshape(-1) for n in ('key', 'value')]))
        self.wpost = cvt(P[pre + 'post/w'].reshape(D, N * hd))          # [D, N*hd] = [out, in]
        self.bpost = cvt(P[pre + 'post/b'])
        if per_dim_scale:
            s = 1.442695041 / math.sqrt(hd) * np.log1p(np.exp(P[pre + 'per_dim_scale/per_dim_scale']))
        else:
            s = np.full(hd, hd ** -0.5)
        self.qscale = cvt(s)

    def __call__(self, q_in, kv_in):
        B, T, D = q_in.shape
        S = kv_in.shape[1]
        q = F.linear(q_in, self.wq, self.bq).view(B, T, self.N, self.hd) * self.qscale
        kv = F.linear(kv_in, self.wkv, self.bkv).view(B, S, 2, self.N, self.hd)
        q = q.transpose(1, 2)                                   # [B, N, T, hd]
        k = kv[:, :, 0].transpose(1, 2)
        v = kv[:, :, 1].transpose(1, 2)
        logits = torch.matmul(q, k.transpose(-1, -2))
        logits = 50.0 * torch.tanh(logits / 50.0)
        p = torch.softmax(logits, dim=-1)
        o = torch.matmul(p, v).transpose(1, 2).reshape(B, T, self.N * self.hd)
        return F.linear(o, self.wpost, self.bpost)


def _ln(x, shape, w, b, eps):
    # under torch.autocast (CPU, torch 1.13) a bf16 activation meets float32 LN
    # weights: normalise in float32, as autocast users get for layer_norm on GPU
    if x.dtype != w.dtype:
        x = x.to(w.dtype)
    return F.layer_norm(x, shape, w, b, eps)


def _mm_ln(x, ln):
    # MagicLens LayerNorm: scale used as (1 + scale), eps 1e-6
    return _ln(x, (x.shape[-1],), ln[0], ln[1], 1e-6)


class TorchMagicLens:
    def __init__(self, params, dtype=torch.float32, autocast=False):
        """params: flat float64 dict from magiclens_ref.load_checkpoint.
        autocast=True keeps float32 weights and runs under
        torch.autocast('cpu', dtype=torch.bfloat16)."""
        self.dtype = torch.float32 if autocast else dtype
        self.autocast = autocast
        wdt = self.dtype

        def cvt(a):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(wdt).contiguous()

        P = params
        vp = 'clip/visual/'
        k = P[vp + 'conv1/kernel']                                   # [P, P, C, W] (HWIO)
        self.patch = k.shape[0]
        self.conv_w = cvt(k.transpose(3, 2, 0, 1))                   # [W, C, P, P]
        self.cls = cvt(P[vp + 'class_embedding'])
        self.pos = cvt(P[vp + 'positional_embedding'])
        ntok = self.pos.shape[0]
        self.image_size = int(round(math.sqrt(ntok - 1))) * self.patch
        self.ln_pre = (cvt(P[vp + 'ln_pre/scale']), cvt(P[vp + 'ln_pre/bias']))
        self.ln_post = (cvt(P[vp + 'ln_post/scale']), cvt(P[vp + 'ln_post/bias']))
        self.proj = cvt(P[vp + 'proj/kernel'].T)                     # [E, W]
        nv = _count(P, vp + 'transformer/resblocks_')
        self.vblocks = [_Block(P, vp + 'transformer/resblocks_%d/' % i, cvt) for i in range(nv)]

        mp = 'multimodal_encoder/x_layers_'
        nf = _count(P, mp)
        self.fusion = []
        for i in range(nf):
            pre = mp + '%d/' % i
            self.fusion.append(dict(
                ln=(cvt(1.0 + P[pre + 'layer_norm/scale']), cvt(P[pre + 'layer_norm/bias'])),
                att=_MMAttention(P, pre + 'self_attention/', cvt, False),
                ff_ln=(cvt(1.0 + P[pre + 'ff_layer/layer_norm/scale']),
                       cvt(P[pre + 'ff_layer/layer_norm/bias'])),
                w1=cvt(P[pre + 'ff_layer/ffn_layer1/linear/w'].T),
                b1=cvt(P[pre + 'ff_layer/ffn_layer1/bias/b']),
                w2=cvt(P[pre + 'ff_layer/ffn_layer2/linear/w'].T),
                b2=cvt(P[pre + 'ff_layer/ffn_layer2/bias/b'])))
        pp = 'contrastive_multimodal_pooler/'
        self.pool_q = cvt(P[pp + 'pooling_attn_query'])               # [T, D]
        self.pool = _MMAttention(P, pp + 'pool_attn/', cvt, True)
        self.pool_ln = (cvt(1.0 + P[pp + 'pool_attn_ln/scale']), cvt(P[pp + 'pool_attn_ln/bias']))

        # Empty instruction: [SOT, EOT, 0...]; with the causal mask only positions
        # <= EOT reach the pooled output, so 2 positions suffice.  Computed once.
        self.empty_text = self._encode_empty_text(P, cvt)

    def _encode_empty_text(self, P, cvt):
        tp = 'clip/text/'
        nt = _count(P, tp + 'transformer/resblocks_')
        blocks = [_Block(P, tp + 'transformer/resblocks_%d/' % i, cvt) for i in range(nt)]
        with torch.inference_mode(), self._ctx():
            emb = cvt(P[tp + 'token_embedding/embedding'][[SOT, EOT]])
            x = (emb + cvt(P[tp + 'positional_embedding'][:2]))[None]
            causal = torch.tril(torch.ones(2, 2, dtype=torch.bool))
            for b in blocks:
                x = b(x, causal)
            W = x.shape[-1]
            x = _ln(x[:, 1], (W,), cvt(P[tp + 'ln_final/scale']),
                             cvt(P[tp + 'ln_final/bias']), 1e-5)
            return F.linear(x, cvt(P[tp + 'text_projection/kernel'].T)).to(self.dtype)  # [1, D]

    def _ctx(self):
        if self.autocast:
            return torch.autocast('cpu', dtype=torch.bfloat16)
        import contextlib
        return contextlib.nullcontext()

    def encode_images(self, px):
        """px [B, 3, S, S] normalised -> CLIP image embedding [B, E]."""
        x = F.conv2d(px, self.conv_w, stride=self.patch)             # [B, W, g, g]
        B, W = x.shape[:2]
        x = x.flatten(2).transpose(1, 2)                             # [B, g*g, W]
        x = torch.cat([self.cls.to(x.dtype).expand(B, 1, W), x], dim=1) + self.pos
        x = _ln(x, (W,), self.ln_pre[0], self.ln_pre[1], 1e-5)
        for b in self.vblocks:
            x = b(x)
        x = _ln(x[:, 0], (W,), self.ln_post[0], self.ln_post[1], 1e-5)
        return F.linear(x, self.proj)

    def fuse(self, img):
        B = img.shape[0]
        X = torch.stack([img, self.empty_text.to(img.dtype).expand(B, -1)], dim=1)  # [B, 2, D]
        for f in self.fusion:
            h = _mm_ln(X, f['ln'])
            a = f['att'](h, h) + X
            h = _mm_ln(a, f['ff_ln'])
            h = F.linear(torch.relu(F.linear(h, f['w1'], f['b1'])), f['w2'], f['b2'])
            X = h + a
        q = self.pool_q.to(X.dtype).expand(B, -1, -1)
        e = _mm_ln(self.pool(q, X), self.pool_ln)[:, 0]
        return F.normalize(e.float(), dim=-1, eps=1e-12)

    def embed_images(self, px):
        with torch.inference_mode(), self._ctx():
            if not self.autocast:
                px = px.to(self.dtype)
            return self.fuse(self.encode_images(px))


def blas_in_use():
    """Which BLAS / oneDNN shared objects this process has mapped."""
    libs = set()
    try:
        with open('/proc/self/maps') as f:
            for line in f:
                p = line.split()[-1]
                b = os.path.basename(p)
                if 'blas' in b or 'dnnl' in b or 'lapack' in b:
                    libs.add(p)
    except OSError:
        pass
    return sorted(libs)


def main():
    import argparse
    import time
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', required=True)
    ap.add_argument('--check', type=int, default=2, help='images to check vs the float64 reference')
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    params = ml.load_checkpoint(a.model)
    model = TorchMagicLens(params, torch.float32)
    ref = ml.MagicLensRef(params)
    del params
    print('loaded in %.1fs' % (time.time() - t0), file=sys.stderr)
    rng = np.random.default_rng(0)
    S = model.image_size
    pix = [rng.integers(0, 256, (240 + 16 * i, 320 - 8 * i, 3)).astype(np.uint8) for i in range(a.check)]
    px = np.stack([ml.preprocess(p, S) for p in pix])                  # [B, S, S, 3] float64
    tok = [SOT, EOT] + [0] * 75
    with torch.no_grad():
        r = ref.embed(px, np.array([tok] * a.check)).numpy()
    t = model.embed_images(torch.from_numpy(px).permute(0, 3, 1, 2).float().contiguous()).double().numpy()
    cos = (r * t).sum(1) / np.linalg.norm(r, axis=1) / np.linalg.norm(t, axis=1)
    print('float32 torch vs float64 reference: cosines %s, max abs diff %.3g'
          % (' '.join('%.9f' % c for c in cos), np.abs(r - t).max()))
    tb = TorchMagicLens(ml.load_checkpoint(a.model), torch.bfloat16)
    b = tb.embed_images(torch.from_numpy(px).permute(0, 3, 1, 2).float().contiguous()).double().numpy()
    cb = (r * b).sum(1) / np.linalg.norm(r, axis=1) / np.linalg.norm(b, axis=1)
    print('bfloat16 torch vs float64 reference: cosines %s' % ' '.join('%.6f' % c for c in cb))
    print('libraries: %s' % ', '.join(blas_in_use()))
    return 0 if cos.min() > 0.99999 else 1


if __name__ == '__main__':
    sys.exit(main())
