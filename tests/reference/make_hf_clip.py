#!/usr/bin/python3
"""Tiny random Hugging Face CLIPModel weights (model.safetensors) and an
independent reading of them, for tests of `magiclens export --model
X.safetensors` (src/train/init.c).

Pure numpy + struct + json (no transformers / safetensors packages):

  make_hf_clip.py --out DIR/model.safetensors [--seed N] [--dtype F32|F16|BF16]
                  [--vision-heads H --text-heads H]   # also writes DIR/config.json
  make_hf_clip.py --corrupt KIND --src GOOD.safetensors --out BAD.safetensors
      KIND: short hdrlen truncated offsets dtype missing badjson notobject shape

Library use (from a test's Python):
  read_safetensors(path) -> {name: float32 / int64 ndarray}
  expected_flax(path, vision_heads=0, text_heads=0) -> {flax name: float32 ndarray}
      the mapping written from the transformers CLIPModel layout, independently
      of the C code: torch Linear [out, in] -> Flax [in, out] split into heads,
      Conv OIHW -> HWIO, HF names -> scenic names;
  hf_clip_embed(tensors, px_nhwc, ids, vision_heads, text_heads) -> (img [N,E], txt [N,E])
      the forward pass of transformers' CLIPModel (get_image_features /
      get_text_features: quick_gelu, causal mask, EOS = argmax of ids) in
      float64 torch, on the HF tensors as stored.
Sizes: image 224, patch 32, vision width 128 x 2 layers, text width 64 x 2
layers, projection 64, vocab 49408, context 77, MLP 4 x width.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

CFG = dict(image=224, patch=32, vw=128, vl=2, tw=64, tl=2, e=64, vocab=49408, ctx=77)
DT_SIZE = {'F32': 4, 'F16': 2, 'BF16': 2, 'I64': 8, 'I32': 4}


def hf_tensors(seed, cfg=CFG):
    """Ordered [(name, float32 array or int64 array)] in CLIPModel's names."""
    rng = np.random.default_rng(seed)
    out = []

    def normal(shape, std):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def ln(prefix, w):
        out.append((prefix + '.weight', 1 + normal((w,), 0.1)))
        out.append((prefix + '.bias', normal((w,), 0.02)))

    def layers(prefix, w, n):
        for i in range(n):
            p = '%s.encoder.layers.%d.' % (prefix, i)
            for proj in ('q_proj', 'k_proj', 'v_proj', 'out_proj'):
                out.append((p + 'self_attn.%s.weight' % proj, normal((w, w), w ** -0.5)))
                out.append((p + 'self_attn.%s.bias' % proj, normal((w,), 0.02)))
            ln(p + 'layer_norm1', w)
            out.append((p + 'mlp.fc1.weight', normal((4 * w, w), w ** -0.5)))
            out.append((p + 'mlp.fc1.bias', normal((4 * w,), 0.02)))
            out.append((p + 'mlp.fc2.weight', normal((w, 4 * w), (4 * w) ** -0.5)))
            out.append((p + 'mlp.fc2.bias', normal((w,), 0.02)))
            ln(p + 'layer_norm2', w)

    P, W, TW, E = cfg['patch'], cfg['vw'], cfg['tw'], cfg['e']
    ntok = (cfg['image'] // P) ** 2 + 1
    out.append(('text_model.embeddings.token_embedding.weight', normal((cfg['vocab'], TW), 0.5)))
    out.append(('text_model.embeddings.position_embedding.weight', normal((cfg['ctx'], TW), 0.1)))
    out.append(('text_model.embeddings.position_ids', np.arange(cfg['ctx'], dtype=np.int64)[None]))
    layers('text_model', TW, cfg['tl'])
    ln('text_model.final_layer_norm', TW)
    out.append(('vision_model.embeddings.class_embedding', normal((W,), 0.1)))
    out.append(('vision_model.embeddings.patch_embedding.weight',
                normal((W, 3, P, P), (3 * P * P) ** -0.5)))
    out.append(('vision_model.embeddings.position_embedding.weight', normal((ntok, W), 0.1)))
    out.append(('vision_model.embeddings.position_ids', np.arange(ntok, dtype=np.int64)[None]))
    ln('vision_model.pre_layrnorm', W)
    layers('vision_model', W, cfg['vl'])
    ln('vision_model.post_layernorm', W)
    out.append(('visual_projection.weight', normal((E, W), W ** -0.5)))
    out.append(('text_projection.weight', normal((E, TW), TW ** -0.5)))
    out.append(('logit_scale', np.array(np.log(1 / 0.07), dtype=np.float32)))
    return out


def to_bf16_bits(x):
    u = np.ascontiguousarray(x, dtype='<f4').view('<u4')
    return ((u + (((u >> 16) & 1) + np.uint32(0x7FFF))) >> 16).astype('<u2')


def encode(arr, dtype):
    """(safetensors dtype, raw little-endian bytes)."""
    if arr.dtype == np.int64:
        return 'I64', arr.astype('<i8').tobytes()
    if dtype == 'F32':
        return 'F32', arr.astype('<f4').tobytes()
    if dtype == 'F16':
        return 'F16', arr.astype('<f2').tobytes()
    return 'BF16', to_bf16_bits(arr).tobytes()


def write_safetensors(path, tensors, dtype='F32', metadata=True):
    header, blobs, off = {}, [], 0
    if metadata:
        header['__metadata__'] = {'format': 'pt'}
    for name, arr in tensors:
        dt, raw = encode(arr, dtype)
        header[name] = {'dtype': dt, 'shape': list(arr.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    write_raw(path, json.dumps(header, separators=(',', ':')).encode(), b''.join(blobs))


def write_raw(path, hjson, data, hlen=None):
    hjson += b' ' * (-len(hjson) % 8)  # transformers pads the header to 8 bytes
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(hjson) if hlen is None else hlen) + hjson + data)


def read_raw(path):
    with open(path, 'rb') as f:
        blob = f.read()
    n = struct.unpack('<Q', blob[:8])[0]
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def read_safetensors(path):
    header, data = read_raw(path)
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        b, end = e['data_offsets']
        raw = data[b:end]
        if e['dtype'] == 'BF16':
            a = (np.frombuffer(raw, '<u2').astype(np.uint32) << 16).view(np.float32)
        elif e['dtype'] == 'F16':
            a = np.frombuffer(raw, '<f2').astype(np.float32)
        elif e['dtype'] == 'F32':
            a = np.frombuffer(raw, '<f4').astype(np.float32)
        elif e['dtype'] == 'I64':
            a = np.frombuffer(raw, '<i8')
        else:
            raise ValueError('dtype %s' % e['dtype'])
        out[name] = a.reshape(e['shape'])
    return out


def expected_flax(path, vision_heads=0, text_heads=0):
    t = read_safetensors(path)
    out = {}
    W = t['vision_model.embeddings.class_embedding'].shape[0]
    TW = t['text_model.embeddings.token_embedding.weight'].shape[1]
    vh = vision_heads or W // 64
    th = text_heads or TW // 64

    def tower(hf, fx, w, heads):
        i = 0
        while '%s.encoder.layers.%d.layer_norm1.weight' % (hf, i) in t:
            s, d = '%s.encoder.layers.%d.' % (hf, i), '%s/transformer/resblocks_%d/' % (fx, i)
            hd = w // heads
            for a, b in (('q_proj', 'query'), ('k_proj', 'key'), ('v_proj', 'value')):
                out[d + 'attn/%s/kernel' % b] = t[s + 'self_attn.%s.weight' % a].T.reshape(w, heads, hd)
                out[d + 'attn/%s/bias' % b] = t[s + 'self_attn.%s.bias' % a].reshape(heads, hd)
            out[d + 'attn/out/kernel'] = t[s + 'self_attn.out_proj.weight'].T.reshape(heads, hd, w)
            out[d + 'attn/out/bias'] = t[s + 'self_attn.out_proj.bias']
            for a, b in (('layer_norm1', 'ln_1'), ('layer_norm2', 'ln_2')):
                out[d + b + '/scale'] = t[s + a + '.weight']
                out[d + b + '/bias'] = t[s + a + '.bias']
            out[d + 'mlp/c_fc/kernel'] = t[s + 'mlp.fc1.weight'].T
            out[d + 'mlp/c_fc/bias'] = t[s + 'mlp.fc1.bias']
            out[d + 'mlp/c_proj/kernel'] = t[s + 'mlp.fc2.weight'].T
            out[d + 'mlp/c_proj/bias'] = t[s + 'mlp.fc2.bias']
            i += 1

    def norm(fx, hf):
        out[fx + '/scale'] = t[hf + '.weight']
        out[fx + '/bias'] = t[hf + '.bias']

    v = 'clip/visual/'
    out[v + 'conv1/kernel'] = t['vision_model.embeddings.patch_embedding.weight'].transpose(2, 3, 1, 0)
    out[v + 'class_embedding'] = t['vision_model.embeddings.class_embedding']
    out[v + 'positional_embedding'] = t['vision_model.embeddings.position_embedding.weight']
    norm(v + 'ln_pre', 'vision_model.pre_layrnorm')
    tower('vision_model', 'clip/visual', W, vh)
    norm(v + 'ln_post', 'vision_model.post_layernorm')
    out[v + 'proj/kernel'] = t['visual_projection.weight'].T
    x = 'clip/text/'
    out[x + 'token_embedding/embedding'] = t['text_model.embeddings.token_embedding.weight']
    out[x + 'positional_embedding'] = t['text_model.embeddings.position_embedding.weight']
    tower('text_model', 'clip/text', TW, th)
    norm(x + 'ln_final', 'text_model.final_layer_norm')
    out[x + 'text_projection/kernel'] = t['text_projection.weight'].T
    out['clip/logit_scale'] = t['logit_scale']
    return {k: np.array(a, dtype=np.float32, order='C') for k, a in out.items()}  # keeps 0-d


def hf_clip_embed(t, px_nhwc, ids, vision_heads=0, text_heads=0):
    """transformers CLIPModel.get_image_features / get_text_features in float64."""
    import torch
    import torch.nn.functional as F
    T = {k: torch.tensor(np.asarray(v, dtype=np.float64)) for k, v in t.items()
         if np.asarray(v).dtype != np.int64}

    def lin(x, p):
        return x @ T[p + '.weight'].T + T[p + '.bias']

    def ln(x, p):
        return F.layer_norm(x, x.shape[-1:], T[p + '.weight'], T[p + '.bias'], 1e-5)

    def encoder(x, prefix, heads, mask):
        i = 0
        B, L, W = x.shape
        hd = W // heads
        while '%s.encoder.layers.%d.layer_norm1.weight' % (prefix, i) in T:
            p = '%s.encoder.layers.%d.' % (prefix, i)
            h = ln(x, p + 'layer_norm1')
            q = lin(h, p + 'self_attn.q_proj') * hd ** -0.5
            k = lin(h, p + 'self_attn.k_proj')
            v = lin(h, p + 'self_attn.v_proj')
            q, k, v = (z.view(B, L, heads, hd).transpose(1, 2) for z in (q, k, v))
            s = q @ k.transpose(-1, -2)
            if mask is not None:
                s = s + mask
            a = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, L, W)
            x = x + lin(a, p + 'self_attn.out_proj')
            h = lin(ln(x, p + 'layer_norm2'), p + 'mlp.fc1')
            x = x + lin(h * torch.sigmoid(1.702 * h), p + 'mlp.fc2')  # quick_gelu
            i += 1
        return x

    px = torch.tensor(np.asarray(px_nhwc, dtype=np.float64)).permute(0, 3, 1, 2)
    w = T['vision_model.embeddings.patch_embedding.weight']
    W = w.shape[0]
    e = F.conv2d(px, w, stride=w.shape[-1]).flatten(2).transpose(1, 2)
    cls = T['vision_model.embeddings.class_embedding'].expand(e.shape[0], 1, W)
    x = torch.cat([cls, e], 1) + T['vision_model.embeddings.position_embedding.weight']
    x = encoder(ln(x, 'vision_model.pre_layrnorm'), 'vision_model', vision_heads or W // 64, None)
    img = ln(x[:, 0], 'vision_model.post_layernorm') @ T['visual_projection.weight'].T

    ids = torch.tensor(np.asarray(ids, dtype=np.int64))
    tok = T['text_model.embeddings.token_embedding.weight']
    TW = tok.shape[1]
    L = ids.shape[1]
    x = tok[ids] + T['text_model.embeddings.position_embedding.weight'][:L]
    mask = torch.full((L, L), float('-inf'), dtype=torch.float64).triu(1)
    x = encoder(x, 'text_model', text_heads or TW // 64, mask)
    x = ln(x, 'text_model.final_layer_norm')
    txt = x[torch.arange(len(ids)), ids.argmax(-1)] @ T['text_projection.weight'].T
    return img.numpy(), txt.numpy()


# ---- the documented fusion initialisation (docs/training-init.md) ----------

M64 = (1 << 64) - 1


class Xoshiro:
    """xoshiro256** seeded with splitmix64(seed ^ fnv1a64(name)); Box-Muller."""

    def __init__(self, seed, name):
        h = 0xcbf29ce484222325
        for b in name.encode():
            h = ((h ^ b) * 0x100000001b3) & M64
        x = (seed ^ h) & M64
        self.s = []
        for _ in range(4):
            x = (x + 0x9e3779b97f4a7c15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
            z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
            self.s.append(z ^ (z >> 31))
        self.spare = None

    @staticmethod
    def _rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & M64

    def next(self):
        s = self.s
        out = (self._rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return out

    def uniform(self):
        return (self.next() >> 11) * 2.0 ** -53

    def normal(self):
        import math
        if self.spare is not None:
            v, self.spare = self.spare, None
            return v
        u1 = ((self.next() >> 11) + 1) * 2.0 ** -53
        u2 = self.uniform()
        rad, th = math.sqrt(-2.0 * math.log(u1)), 6.283185307179586 * u2
        self.spare = rad * math.sin(th)
        return rad * math.cos(th)


def fusion_init(D, seed, heads=None):
    """{name: (float32 array, kind, param)} as the docs define the fusion init:
    kind 'zero', 'xavier' (param = limit a) or 'normal' (param = std)."""
    H = heads or (16 if D == 768 else D // 64)
    out = {}

    def add(name, shape, kind, fan_in=0.0, fan_out=0.0):
        n = int(np.prod(shape))
        r = Xoshiro(seed, name)
        if kind == 'zero':
            a, v = 0.0, np.zeros(n, np.float32)
        elif kind == 'xavier':
            a = (6.0 / (fan_in + fan_out)) ** 0.5
            v = np.array([a * (2.0 * r.uniform() - 1.0) for _ in range(n)], np.float32)
        else:
            a = fan_in
            v = np.array([a * r.normal() for _ in range(n)], np.float32)
        out[name] = (v.reshape(shape), kind, a)

    def attention(p, hd):
        for k in ('query', 'key', 'value'):
            add(p + '/%s/w' % k, (D, H, hd), 'xavier', D, H * hd)
            add(p + '/%s/b' % k, (H, hd), 'zero')
        add(p + '/post/w', (D, H, hd), 'xavier', H * hd, D)
        add(p + '/post/b', (D,), 'zero')

    for i in range(4):
        p = 'multimodal_encoder/x_layers_%d/' % i
        add(p + 'layer_norm/scale', (D,), 'zero')
        add(p + 'layer_norm/bias', (D,), 'zero')
        attention(p + 'self_attention', D // H)
        add(p + 'ff_layer/layer_norm/scale', (D,), 'zero')
        add(p + 'ff_layer/layer_norm/bias', (D,), 'zero')
        add(p + 'ff_layer/ffn_layer1/linear/w', (D, 4 * D), 'xavier', D, 4 * D)
        add(p + 'ff_layer/ffn_layer1/bias/b', (4 * D,), 'zero')
        add(p + 'ff_layer/ffn_layer2/linear/w', (4 * D, D), 'xavier', 4 * D, D)
        add(p + 'ff_layer/ffn_layer2/bias/b', (D,), 'zero')
    p = 'contrastive_multimodal_pooler/'
    attention(p + 'pool_attn', 4 * D // H)
    add(p + 'pool_attn/per_dim_scale/per_dim_scale', (4 * D // H,), 'zero')
    add(p + 'pool_attn_ln/scale', (D,), 'zero')
    add(p + 'pool_attn_ln/bias', (D,), 'zero')
    add(p + 'pooling_attn_query', (1, D), 'normal', D ** -0.5)
    return out


def corrupt(kind, src, out):
    header, data = read_raw(src)
    names = [k for k in header if k != '__metadata__']
    victim = 'vision_model.post_layernorm.weight'
    if kind == 'short':
        with open(out, 'wb') as f:
            f.write(b'\x10\x00\x00')
        return
    if kind == 'hdrlen':  # header length past the end of the file
        hj = json.dumps(header).encode()
        write_raw(out, hj, data, hlen=len(hj) + len(data) + 1000)
        return
    if kind == 'truncated':  # the last tensor's bytes are missing
        write_raw(out, json.dumps(header).encode(), data[:len(data) - 100])
        return
    if kind == 'offsets':
        header[victim]['data_offsets'] = [len(data) - 4, len(data) + 508]
    elif kind == 'dtype':  # same byte size, integer type
        header[victim]['dtype'] = 'I32'
    elif kind == 'missing':
        del header[victim]
    elif kind == 'shape':  # shape and byte count disagree
        header[victim]['shape'] = [header[victim]['shape'][0] + 1]
    elif kind == 'notobject':
        write_raw(out, json.dumps([1, 2, 3]).encode(), data)
        return
    elif kind == 'badjson':
        hj = json.dumps(header).encode()
        write_raw(out, hj[:len(hj) // 2] + b'"', data, hlen=None)
        return
    else:
        raise SystemExit('unknown --corrupt kind %s' % kind)
    assert names
    write_raw(out, json.dumps(header).encode(), data)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', required=True)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--dtype', choices=['F32', 'F16', 'BF16'], default='F32')
    ap.add_argument('--vision-heads', type=int, default=0)
    ap.add_argument('--text-heads', type=int, default=0)
    ap.add_argument('--corrupt')
    ap.add_argument('--src')
    a = ap.parse_args(argv)
    if a.corrupt:
        corrupt(a.corrupt, a.src, a.out)
        return 0
    write_safetensors(a.out, hf_tensors(a.seed), a.dtype)
    if a.vision_heads or a.text_heads:
        cfg = {'architectures': ['CLIPModel'], 'model_type': 'clip',
               'projection_dim': CFG['e'],
               'text_config': {'hidden_size': CFG['tw'], 'num_attention_heads': a.text_heads or CFG['tw'] // 64},
               'vision_config': {'hidden_size': CFG['vw'],
                                 'num_attention_heads': a.vision_heads or CFG['vw'] // 64}}
        with open(os.path.join(os.path.dirname(os.path.abspath(a.out)), 'config.json'), 'w') as f:
            json.dump(cfg, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
