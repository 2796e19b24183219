#!/usr/bin/python3
"""Independent float64 PyTorch reference of the released MagicLens computation.

Written from google-deepmind/magiclens (model.py, layers.py, data_utils.py),
scenic's CLIP (layers.py, model.py, tokenizer.py), openai/CLIP's
simple_tokenizer and flax's serialization / attention code.  Everything is
computed in torch.float64.  See README.md for decisions and deviations.

Public API:
  load_checkpoint(path) -> {"clip/visual/conv1/kernel": np.ndarray(float64), ...}
  MagicLensRef(params)      .config, .encode_image(px), .encode_text(ids),
                            .fuse(img_emb, txt_emb), .embed(px, ids)
  Tokenizer(vocab_path)     .encode(text) -> list of BPE ids,
                            .tokenize(text, truncate=False) -> 77 ids
  load_image(path) -> uint8 HxWx3 (PIL .convert("RGB"))
  preprocess(pixels_uint8, tower_size) -> float64 [S, S, 3] normalised
  resize_weights(n_in, n_out) -> float64 [n_in, n_out] (jax compute_weight_mat)
"""
import gzip
import html
import pickle
import unicodedata

import msgpack
import numpy as np
import torch

try:
    import regex as _re
except ImportError:  # pragma: no cover
    _re = None

DT = torch.float64

# --------------------------------------------------------------------------
# Checkpoint reading
# --------------------------------------------------------------------------


def _codecs_encode(s, enc):
    if not isinstance(s, str) or enc != 'latin1':
        raise pickle.UnpicklingError('unexpected _codecs.encode arguments')
    return s.encode('latin-1')


def _empty_bytes(*args):
    if args:
        raise pickle.UnpicklingError('bytes() with arguments not allowed')
    return b''


class _BytesOnlyUnpickler(pickle.Unpickler):
    """Allows nothing but a bytes object: protocol >= 3 (SHORT_)BINBYTES(8) /
    BYTEARRAY8 need no globals; protocol 2 stores bytes as
    _codecs.encode(<str>, 'latin1') and empty bytes as __builtin__.bytes()."""

    def find_class(self, module, name):
        if (module, name) == ('_codecs', 'encode'):
            return _codecs_encode
        if (module, name) in (('builtins', 'bytes'), ('__builtin__', 'bytes')):
            return _empty_bytes
        raise pickle.UnpicklingError('global %s.%s not allowed' % (module, name))

    def persistent_load(self, pid):
        raise pickle.UnpicklingError('persistent ids not allowed')


def unpickle_bytes(data):
    import io
    obj = _BytesOnlyUnpickler(io.BytesIO(data)).load()
    if isinstance(obj, bytearray):
        obj = bytes(obj)
    if not isinstance(obj, bytes):
        raise ValueError('checkpoint pickle does not hold a bytes object but %r' % type(obj))
    return obj


def _decode_array(payload, scalar=False):
    shape, dtype, buf = msgpack.unpackb(payload, raw=True)
    dtype = dtype.decode() if isinstance(dtype, bytes) else dtype
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape)) if shape else 1
    if dtype == 'bfloat16':
        u = np.frombuffer(buf, dtype='<u2', count=n).astype(np.uint32) << 16
        a = u.view(np.float32).astype(np.float64)
    elif dtype in ('float32', 'float16', 'float64'):
        a = np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder('<'), count=n).astype(np.float64)
    elif dtype in ('int32', 'int64', 'uint8', 'int8', 'uint32', 'int16', 'uint16', 'bool'):
        a = np.frombuffer(buf, dtype=np.dtype(dtype), count=n).astype(np.float64)
    else:
        raise ValueError('unsupported dtype %r' % dtype)
    if len(buf) != n * (2 if dtype == 'bfloat16' else np.dtype(dtype).itemsize):
        raise ValueError('array byte length mismatch')
    a = a.reshape(shape)
    return ('npscalar' if scalar else 'ndarray', dtype, a)


class _Arr:
    __slots__ = ('kind', 'dtype', 'a')

    def __init__(self, t):
        self.kind, self.dtype, self.a = t


def _ext_hook(code, data):
    if code == 1:
        return _Arr(_decode_array(data))
    if code == 3:
        return _Arr(_decode_array(data, scalar=True))
    if code == 2:
        re_, im = msgpack.unpackb(data)
        return complex(re_, im)
    raise ValueError('unknown msgpack ext type %d' % code)


def _unchunk(d):
    shape = tuple(int(d['shape'][str(i)]) for i in range(len(d['shape'])))
    chunks = [d['chunks'][str(i)] for i in range(len(d['chunks']))]
    flat = np.concatenate([c.a.reshape(-1) for c in chunks])
    return _Arr(('ndarray', chunks[0].dtype, flat.reshape(shape)))


def _flatten(tree, prefix, out, dtypes):
    for k, v in tree.items():
        if isinstance(v, dict) and '__msgpack_chunked_array__' in v:
            v = _unchunk(v)
        path = prefix + k
        if isinstance(v, dict):
            _flatten(v, path + '/', out, dtypes)
        elif isinstance(v, _Arr):
            out[path] = v.a
            dtypes[path] = v.dtype
        else:
            raise ValueError('unexpected leaf %r at %s' % (type(v), path))


def decode_flax_bytes(payload):
    """flax.serialization.msgpack_restore + flattening: {path: float64 array}."""
    tree = msgpack.unpackb(payload, ext_hook=_ext_hook, raw=False,
                           max_bin_len=len(payload), max_ext_len=len(payload),
                           max_map_len=1 << 20, max_str_len=1 << 20)
    out, dtypes = {}, {}
    _flatten(tree, '', out, dtypes)
    return out, dtypes


def load_checkpoint(path, with_dtypes=False):
    with open(path, 'rb') as f:
        data = f.read()
    payload = unpickle_bytes(data)
    del data
    params, dtypes = decode_flax_bytes(payload)
    pre = 'params/'
    if not all(k.startswith(pre) for k in params):
        raise ValueError('top level must be {"params": ...}')
    params = {k[len(pre):]: v for k, v in params.items()}
    dtypes = {k[len(pre):]: v for k, v in dtypes.items()}
    return (params, dtypes) if with_dtypes else params


# --------------------------------------------------------------------------
# Image preprocessing
# --------------------------------------------------------------------------

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


def resize_weights(n_in, n_out):
    """jax.image.resize(method='bilinear', antialias=True) weights for one axis
    (jax/_src/image/scale.py compute_weight_mat, translation 0), float64.
    Returns W [n_in, n_out]: out[j] = sum_i in[i] * W[i, j]."""
    scale = n_out / n_in
    inv_scale = 1.0 / scale
    kernel_scale = max(inv_scale, 1.0)
    sample_f = (np.arange(n_out) + 0.5) * inv_scale - 0.5
    x = np.abs(sample_f[None, :] - np.arange(n_in, dtype=np.float64)[:, None]) / kernel_scale
    w = np.maximum(0.0, 1.0 - x)
    tot = w.sum(axis=0, keepdims=True)
    w = np.where(np.abs(tot) > 1000.0 * np.finfo(np.float32).eps,
                 w / np.where(tot != 0, tot, 1), 0.0)
    inside = (sample_f >= -0.5) & (sample_f <= n_in - 0.5)
    return np.where(inside[None, :], w, 0.0)


def jax_resize(img, out_h, out_w):
    """img float64 [H, W, C] -> [out_h, out_w, C]; unchanged axes are skipped."""
    h, w = img.shape[:2]
    if h != out_h:
        img = np.einsum('hwc,hH->Hwc', img, resize_weights(h, out_h))
    if w != out_w:
        img = np.einsum('hwc,wW->hWc', img, resize_weights(w, out_w))
    return img


def load_image(path):
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB'), dtype=np.uint8)


def preprocess(pixels, tower_size):
    """uint8 [H, W, 3] -> float64 [S, S, 3]: data_utils.process_img then
    MagicLens._preprocess_images (crop, resize to tower size, normalise)."""
    x = pixels.astype(np.float64)
    x = x / (x.max() + 1e-12)
    x = jax_resize(x, 224, 224)
    # largest centred square crop (no-op on 224x224)
    h, w = x.shape[:2]
    size = w if h > w else h
    ph = (h - w) // 2 if h > w else 0
    pw = (w - h) // 2 if w > h else 0
    x = x[ph:ph + size, pw:pw + size]
    x = jax_resize(x, tower_size, tower_size)
    return (x - MEAN) / STD


# --------------------------------------------------------------------------
# Tokenizer (OpenAI CLIP BPE)
# --------------------------------------------------------------------------

def _byte_unicode_table():
    keep = (list(range(ord('!'), ord('~') + 1)) + list(range(0xA1, 0xAC + 1))
            + list(range(0xAE, 0xFF + 1)))
    order, chars = list(keep), [chr(b) for b in keep]
    extra = 0
    for b in range(256):
        if b not in keep:
            order.append(b)
            chars.append(chr(256 + extra))
            extra += 1
    return order, chars


_LIGATURES = {
    0x0132: 'IJ', 0x0133: 'ij', 0x0149: '\u02bcn', 0x01F1: 'DZ', 0x01F2: 'Dz',
    0x01F3: 'dz', 0x01C4: 'D\u017d', 0x01C5: 'D\u017e', 0x01C6: 'd\u017e',
    0x01C7: 'LJ', 0x01C8: 'Lj', 0x01C9: 'lj', 0x01CA: 'NJ', 0x01CB: 'Nj',
    0x01CC: 'nj', 0xFB00: 'ff', 0xFB01: 'fi', 0xFB02: 'fl', 0xFB03: 'ffi',
    0xFB04: 'ffl', 0xFB05: '\u017ft', 0xFB06: 'st',
}


def _width_table():
    t = {0x3000: ' '}
    for cp in range(0xFF01, 0xFFF0):
        alt = unicodedata.normalize('NFKC', chr(cp))
        if alt != chr(cp):
            t[cp] = alt
    return t


_WIDTH = _width_table()
_QUOTES = {cp: "'" for cp in [0x02BC] + list(range(0x2018, 0x201B + 1))}
_QUOTES.update({cp: '"' for cp in range(0x201C, 0x201F + 1)})
_CONTROL = {cp: None for cp in (list(range(0x00, 0x09)) + [0x0B] + list(range(0x0E, 0x20))
                                + [0x7F] + list(range(0x206A, 0x2070)) + [0xFEFF]
                                + list(range(0xFFF9, 0xFFFD)))}


def fix_text_lite(text):
    """The parts of ftfy.fix_text that matter for clean input, in ftfy's order:
    ligatures, character width, quotes, line breaks, surrogates, control chars,
    NFC.  (No mojibake / C1 / terminal-escape repair; no ftfy HTML step.)"""
    text = text.translate(_LIGATURES)
    text = text.translate(_WIDTH)
    text = text.translate(_QUOTES)
    text = text.replace('\r\n', '\n').replace('\r', '\n')
    text = text.replace('\u2028', '\n').replace('\u2029', '\n').replace('\x85', '\n')
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        text = text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')
    text = text.translate(_CONTROL)
    return unicodedata.normalize('NFC', text)


def clean_text(text):
    text = fix_text_lite(text)
    text = html.unescape(html.unescape(text)).strip()
    text = _re.sub(r'\s+', ' ', text).strip()
    return text.lower()


class Tokenizer:
    SOT, EOT, CONTEXT = 49406, 49407, 77

    def __init__(self, vocab_path):
        with gzip.open(vocab_path) as f:
            lines = f.read().decode('utf-8').split('\n')
        merges = [tuple(l.split()) for l in lines[1:49152 - 256 - 2 + 1]]
        order, chars = _byte_unicode_table()
        self.byte_char = dict(zip(order, chars))
        vocab = chars + [c + '</w>' for c in chars] + [a + b for a, b in merges]
        vocab += ['<|startoftext|>', '<|endoftext|>']
        self.ids = {s: i for i, s in enumerate(vocab)}
        assert self.ids['<|startoftext|>'] == self.SOT and self.ids['<|endoftext|>'] == self.EOT
        self.rank = {m: i for i, m in enumerate(merges)}
        self.cache = {'<|startoftext|>': ['<|startoftext|>'],
                      '<|endoftext|>': ['<|endoftext|>']}
        self.pat = _re.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            _re.IGNORECASE)

    def _bpe(self, piece):
        if piece in self.cache:
            return self.cache[piece]
        syms = list(piece[:-1]) + [piece[-1] + '</w>']
        while len(syms) > 1:
            best, best_rank = None, None
            for p in zip(syms, syms[1:]):
                r = self.rank.get(p)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = p, r
            if best is None:
                break
            merged, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == best[0] and syms[i + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(syms[i])
                    i += 1
            syms = merged
        self.cache[piece] = syms
        return syms

    def encode(self, text):
        out = []
        for piece in self.pat.findall(clean_text(text)):
            mapped = ''.join(self.byte_char[b] for b in piece.encode('utf-8'))
            out.extend(self.ids[s] for s in self._bpe(mapped))
        return out

    def tokenize(self, text, truncate=False):
        toks = [self.SOT] + self.encode(text) + [self.EOT]
        if len(toks) > self.CONTEXT:
            if not truncate:
                raise ValueError('text is too long for context length %d (%d tokens): %r'
                                 % (self.CONTEXT, len(toks), text))
            toks = toks[:self.CONTEXT - 1] + [self.EOT]
        return toks + [0] * (self.CONTEXT - len(toks))


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def clip_ln(x, p, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * p['scale'] + p['bias']


def mm_ln(x, p, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) * torch.rsqrt(var + eps) * (1 + p['scale']) + p['bias']


def flax_self_attention(x, p, mask=None):
    """nn.SelfAttention: x [B, L, W]; kernels q/k/v [W, H, hd], out [H, hd, W].
    (einsum 'bld,dhk->blhk' written as a 2-D matmul on the flattened kernel)"""
    B, L, W = x.shape
    H, hd = p['query']['kernel'].shape[1:]

    def proj(n):
        y = x.reshape(B * L, W) @ p[n]['kernel'].reshape(W, H * hd)
        return y.reshape(B, L, H, hd) + p[n]['bias']
    q, k, v = proj('query'), proj('key'), proj('value')
    q = q / np.sqrt(hd)
    logits = torch.einsum('bqhd,bkhd->bhqk', q, k)
    if mask is not None:
        logits = torch.where(mask, logits, torch.tensor(torch.finfo(DT).min, dtype=DT))
    probs = torch.softmax(logits, dim=-1)
    o = torch.einsum('bhqk,bkhd->bqhd', probs, v)
    return (o.reshape(B * L, H * hd) @ p['out']['kernel'].reshape(H * hd, -1)).reshape(B, L, -1) \
        + p['out']['bias']


def quick_gelu(z):
    return z * torch.sigmoid(1.702 * z)


def clip_block(x, p, mask=None):
    x = x + flax_self_attention(clip_ln(x, p['ln_1']), p['attn'], mask)
    h = clip_ln(x, p['ln_2'])
    h = quick_gelu(h @ p['mlp']['c_fc']['kernel'] + p['mlp']['c_fc']['bias'])
    return x + (h @ p['mlp']['c_proj']['kernel'] + p['mlp']['c_proj']['bias'])


def mm_attention(q_in, kv_in, p, per_dim_scale):
    """layers.DotProductAttention: w [D, N, H] for q/k/v and post."""
    q = torch.einsum('btd,dnh->btnh', q_in, p['query']['w']) + p['query']['b']
    k = torch.einsum('btd,dnh->btnh', kv_in, p['key']['w']) + p['key']['b']
    v = torch.einsum('btd,dnh->btnh', kv_in, p['value']['w']) + p['value']['b']
    hd = q.shape[-1]
    if per_dim_scale:
        s = 1.442695041 / np.sqrt(hd) * torch.nn.functional.softplus(
            p['per_dim_scale']['per_dim_scale'])
        q = q * s
    else:
        q = q * hd ** -0.5
    raw = torch.einsum('btnh,bsnh->bnts', q, k)
    logits = 50.0 * torch.tanh(raw / 50.0)
    probs = torch.softmax(logits, dim=-1)
    enc = torch.einsum('bnts,bsnh->btnh', probs, v)
    # returns the un-capped logits too (debugging: is the cap exercised?)
    return torch.einsum('btnh,dnh->btd', enc, p['post']['w']) + p['post']['b'], raw


def _nest(flat):
    tree = {}
    for path, a in flat.items():
        node = tree
        parts = path.split('/')
        for q in parts[:-1]:
            node = node.setdefault(q, {})
        node[parts[-1]] = _t(a)
    return tree


def _count(tree, prefix):
    n = 0
    while (prefix + str(n)) in tree:
        n += 1
    return n


class MagicLensRef:
    def __init__(self, flat_params):
        self.p = _nest(flat_params)
        cl = self.p['clip']
        vis, txt = cl['visual'], cl['text']
        P, _, C, W = vis['conv1']['kernel'].shape
        ntok = vis['positional_embedding'].shape[0]
        grid = int(round((ntok - 1) ** 0.5))
        assert grid * grid == ntok - 1 and C == 3
        vb = vis['transformer']
        tb = txt['transformer']
        mm = self.p['multimodal_encoder']
        pool = self.p['contrastive_multimodal_pooler']['pool_attn']
        self.config = dict(
            patch=P, image_size=grid * P, vision_width=W,
            vision_layers=_count(vb, 'resblocks_'),
            vision_heads=vb['resblocks_0']['attn']['query']['kernel'].shape[1],
            embed_dim=vis['proj']['kernel'].shape[1],
            vocab=txt['token_embedding']['embedding'].shape[0],
            context=txt['positional_embedding'].shape[0],
            text_width=txt['positional_embedding'].shape[1],
            text_layers=_count(tb, 'resblocks_'),
            text_heads=tb['resblocks_0']['attn']['query']['kernel'].shape[1],
            fusion_layers=_count(mm, 'x_layers_'),
            fusion_heads=mm['x_layers_0']['self_attention']['query']['w'].shape[1],
            fusion_ff=mm['x_layers_0']['ff_layer']['ffn_layer1']['linear']['w'].shape[1],
            pool_heads=pool['query']['w'].shape[1],
            pool_head_dim=pool['query']['w'].shape[2],
        )
        self.last_logits = []

    # CLIP image tower: px float64 [B, S, S, 3] (already normalised)
    def encode_image(self, px):
        v = self.p['clip']['visual']
        if not torch.is_tensor(px):
            px = _t(px)
        if px.dim() == 3:
            px = px[None]
        B, S, _, C = px.shape
        P = self.config['patch']
        g = S // P
        patches = px.reshape(B, g, P, g, P, C).permute(0, 1, 3, 2, 4, 5).reshape(B, g * g, P * P * C)
        x = patches @ v['conv1']['kernel'].reshape(P * P * C, -1)
        cls = v['class_embedding'].expand(B, 1, -1)
        x = torch.cat([cls, x], dim=1) + v['positional_embedding'][None]
        x = clip_ln(x, v['ln_pre'])
        for i in range(self.config['vision_layers']):
            x = clip_block(x, v['transformer']['resblocks_%d' % i])
        x = clip_ln(x[:, 0], v['ln_post'])
        return x @ v['proj']['kernel']

    # CLIP text tower: ids int [B, 77]
    def encode_text(self, ids):
        t = self.p['clip']['text']
        ids_np = np.asarray(ids, dtype=np.int64)
        if ids_np.ndim == 1:
            ids_np = ids_np[None]
        ids = torch.from_numpy(ids_np)
        B, L = ids.shape
        x = t['token_embedding']['embedding'][ids] + t['positional_embedding'][None, :L]
        valid = ids > 0
        causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
        mask = (valid[:, :, None] & valid[:, None, :] & causal[None])[:, None]  # [B,1,L,L]
        for i in range(self.config['text_layers']):
            x = clip_block(x, t['transformer']['resblocks_%d' % i], mask)
        x = clip_ln(x, t['ln_final'])
        eot = torch.from_numpy(ids_np.argmax(-1))  # first maximal id, as jnp.argmax
        x = x[torch.arange(B), eot]
        return x @ t['text_projection']['kernel']

    def fuse(self, img_emb, txt_emb, return_unnormalized=False):
        """img_emb, txt_emb [B, D] -> normalised multimodal embedding [B, D]."""
        X = torch.stack([img_emb, txt_emb], dim=1)  # [B, 2, D]
        self.last_logits = []
        mm = self.p['multimodal_encoder']
        for i in range(self.config['fusion_layers']):
            lp = mm['x_layers_%d' % i]
            h = mm_ln(X, lp['layer_norm'])
            a, lg = mm_attention(h, h, lp['self_attention'], per_dim_scale=False)
            self.last_logits.append(lg)
            a = a + X
            f = mm_ln(a, lp['ff_layer']['layer_norm'])
            f = torch.relu(f @ lp['ff_layer']['ffn_layer1']['linear']['w']
                           + lp['ff_layer']['ffn_layer1']['bias']['b'])
            f = f @ lp['ff_layer']['ffn_layer2']['linear']['w'] + lp['ff_layer']['ffn_layer2']['bias']['b']
            X = f + a
        pl = self.p['contrastive_multimodal_pooler']
        B = X.shape[0]
        q = pl['pooling_attn_query'][None].expand(B, -1, -1)
        e, lg = mm_attention(q, X, pl['pool_attn'], per_dim_scale=True)
        self.last_logits.append(lg)
        e = mm_ln(e, pl['pool_attn_ln'])[:, 0]
        n = e / torch.sqrt((e * e).sum(-1, keepdim=True) + 1e-12)
        return (n, e) if return_unnormalized else n

    def embed(self, px, ids):
        return self.fuse(self.encode_image(px), self.encode_text(ids))
