#!/usr/bin/python3
"""Write a random-weight MagicLens checkpoint in the released file format.

The released `magic_lens_clip_{base,large}.pkl` files are a pickle whose only
object is the `bytes` returned by `flax.serialization.to_bytes(params)`.  This
script reproduces that byte layout without flax/jax:

  * outer MessagePack map tree, packed like flax's `msgpack_serialize`
    (`msgpack.packb(tree, default=..., strict_types=True)`, bin type on);
  * every array leaf is ExtType(1, packb([shape, dtype_name, raw_C_bytes],
    use_bin_type=True)) -- 0-d arrays (clip/logit_scale) included: a jax / numpy
    0-d array is an ndarray, so flax writes ext 1 with shape [] (ext 3 is only
    for numpy *scalars*, which a params tree does not contain);
  * arrays with size*itemsize > --chunk-bytes are replaced by flax's chunked
    form {"__msgpack_chunked_array__": True, "shape": {"0": d0, ...},
    "chunks": {"0": flat_chunk, ...}} with max(1, int(chunk_bytes / itemsize))
    elements per chunk (flax: MAX_CHUNK_SIZE = 2**30 for both the test and
    the chunk length);
  * the pickle is what `pickle.dump(payload_bytes, f, protocol=P)` writes
    (protocol 2 stores bytes as `_codecs.encode(<latin-1 str>, "latin1")`;
    protocol 2 is written by a streaming writer that is byte-identical to
    `pickle.dumps(payload, 2)` -- checked by --selftest).

Usage:
  make_checkpoint.py --size tiny|tiny64|tiny14|base|large [--seed N]
      [--dtype float32|bfloat16|float16] [--protocol 2..5]
      [--chunk-bytes N] [--logit-boost X] [--key-order sorted|spec|shuffle]
      --out PATH
  make_checkpoint.py --selftest
"""
import argparse
import io
import os
import pickle
import struct
import sys
import time

import msgpack
import numpy as np

SIZES = {
    # image, patch, vision width, vision layers, text width, text heads,
    # text layers, embed D, fusion layers, fusion heads, vocab, context
    'tiny': dict(image=224, patch=32, vw=128, vl=2, tw=64, th=2, tl=2, d=64,
                 fl=4, fh=4, vocab=49408, ctx=77),
    'tiny64': dict(image=64, patch=16, vw=128, vl=2, tw=64, th=2, tl=2, d=64,
                   fl=4, fh=4, vocab=49408, ctx=77),
    # patch 14 as in large: a patch row of 588 values, not a multiple of 32
    'tiny14': dict(image=56, patch=14, vw=128, vl=2, tw=64, th=2, tl=2, d=64,
                   fl=4, fh=4, vocab=49408, ctx=77),
    'base': dict(image=224, patch=16, vw=768, vl=12, tw=512, th=8, tl=12,
                 d=512, fl=4, fh=8, vocab=49408, ctx=77),
    'large': dict(image=224, patch=14, vw=1024, vl=24, tw=768, th=12, tl=12,
                  d=768, fl=4, fh=16, vocab=49408, ctx=77),
}


class Leaf:
    """An array leaf: shape, flax dtype name, and a numpy array holding the raw
    little-endian C-order bytes (uint16 for bfloat16)."""
    __slots__ = ('shape', 'dtype', 'arr')

    def __init__(self, shape, dtype, arr):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.arr = arr

    @property
    def nbytes(self):
        return self.arr.size * self.arr.dtype.itemsize

    @property
    def itemsize(self):
        return self.arr.dtype.itemsize


def to_dtype(x32, dtype):
    """float32 numpy array -> numpy array with the storage bits of `dtype`."""
    if dtype == 'float32':
        return np.ascontiguousarray(x32, dtype='<f4')
    if dtype == 'float16':
        return np.ascontiguousarray(x32.astype('<f2'))
    if dtype == 'bfloat16':
        u = np.ascontiguousarray(x32, dtype='<f4').view('<u4')
        # round to nearest even (NaNs do not occur here)
        r = ((u >> 16) & 1) + np.uint32(0x7FFF)
        return ((u + r) >> 16).astype('<u2')
    raise ValueError(dtype)


def _vit_block_specs(width, heads, prefix):
    hd = width // heads
    out = []
    out += [(prefix + 'ln_1/scale', (width,), 'ln1'),
            (prefix + 'ln_1/bias', (width,), 'bias')]
    for n in ('query', 'key', 'value'):
        out += [(prefix + 'attn/%s/kernel' % n, (width, heads, hd), ('fan', width)),
                (prefix + 'attn/%s/bias' % n, (heads, hd), 'bias')]
    out += [(prefix + 'attn/out/kernel', (heads, hd, width), ('fan', width)),
            (prefix + 'attn/out/bias', (width,), 'bias')]
    out += [(prefix + 'ln_2/scale', (width,), 'ln1'),
            (prefix + 'ln_2/bias', (width,), 'bias')]
    out += [(prefix + 'mlp/c_fc/kernel', (width, 4 * width), ('fan', width)),
            (prefix + 'mlp/c_fc/bias', (4 * width,), 'bias'),
            (prefix + 'mlp/c_proj/kernel', (4 * width, width), ('fan', 4 * width)),
            (prefix + 'mlp/c_proj/bias', (width,), 'bias')]
    return out


def param_specs(cfg):
    """(path, shape, init) in the order of the spec's tree."""
    P, W, D = cfg['patch'], cfg['vw'], cfg['d']
    ntok = (cfg['image'] // P) ** 2 + 1
    vh = W // 64  # scenic: vision heads = width / vision_head_dim(64)
    s = []
    v = 'clip/visual/'
    s += [(v + 'conv1/kernel', (P, P, 3, W), ('fan', P * P * 3)),
          (v + 'class_embedding', (W,), ('normal', 0.1)),
          (v + 'positional_embedding', (ntok, W), ('normal', 0.1)),
          (v + 'ln_pre/scale', (W,), 'ln1'), (v + 'ln_pre/bias', (W,), 'bias')]
    for i in range(cfg['vl']):
        s += _vit_block_specs(W, vh, v + 'transformer/resblocks_%d/' % i)
    s += [(v + 'ln_post/scale', (W,), 'ln1'), (v + 'ln_post/bias', (W,), 'bias'),
          (v + 'proj/kernel', (W, D), ('fan', W))]
    t = 'clip/text/'
    TW = cfg['tw']
    s += [(t + 'token_embedding/embedding', (cfg['vocab'], TW), ('normal', 1.0)),
          (t + 'positional_embedding', (cfg['ctx'], TW), ('normal', 0.1))]
    for i in range(cfg['tl']):
        s += _vit_block_specs(TW, cfg['th'], t + 'transformer/resblocks_%d/' % i)
    s += [(t + 'ln_final/scale', (TW,), 'ln1'), (t + 'ln_final/bias', (TW,), 'bias'),
          (t + 'text_projection/kernel', (TW, D), ('fan', TW))]
    s += [('clip/logit_scale', (), ('const', float(np.log(1 / 0.07))))]
    H = cfg['fh']
    hd = D // H
    for i in range(cfg['fl']):
        p = 'multimodal_encoder/x_layers_%d/' % i
        s += [(p + 'layer_norm/scale', (D,), 'ln0'), (p + 'layer_norm/bias', (D,), 'bias')]
        for n in ('query', 'key', 'value'):
            s += [(p + 'self_attention/%s/w' % n, (D, H, hd), ('fan', D, n)),
                  (p + 'self_attention/%s/b' % n, (H, hd), ('bias', n))]
        s += [(p + 'self_attention/post/w', (D, H, hd), ('fan', H * hd)),
              (p + 'self_attention/post/b', (D,), 'bias')]
        s += [(p + 'ff_layer/layer_norm/scale', (D,), 'ln0'),
              (p + 'ff_layer/layer_norm/bias', (D,), 'bias'),
              (p + 'ff_layer/ffn_layer1/linear/w', (D, 4 * D), ('fan', D)),
              (p + 'ff_layer/ffn_layer1/bias/b', (4 * D,), 'bias'),
              (p + 'ff_layer/ffn_layer2/linear/w', (4 * D, D), ('fan', 4 * D)),
              (p + 'ff_layer/ffn_layer2/bias/b', (D,), 'bias')]
    p = 'contrastive_multimodal_pooler/'
    phd = 4 * D // H
    for n in ('query', 'key', 'value'):
        s += [(p + 'pool_attn/%s/w' % n, (D, H, phd), ('fan', D, n)),
              (p + 'pool_attn/%s/b' % n, (H, phd), ('bias', n))]
    s += [(p + 'pool_attn/post/w', (D, H, phd), ('fan', H * phd)),
          (p + 'pool_attn/post/b', (D,), 'bias'),
          (p + 'pool_attn/per_dim_scale/per_dim_scale', (phd,), ('normal', 0.3)),
          (p + 'pool_attn_ln/scale', (D,), 'ln0'),
          (p + 'pool_attn_ln/bias', (D,), 'bias'),
          (p + 'pooling_attn_query', (1, D), ('normal', 1.0))]
    return s


def make_value(rng, shape, init, boost):
    n = int(np.prod(shape)) if shape else 1
    kind = init[0] if isinstance(init, tuple) else init
    if kind == 'fan':
        x = rng.standard_normal(n, dtype=np.float32)
        x *= np.float32(1.0 / np.sqrt(init[1]))
        if len(init) > 2 and init[2] in ('query', 'key'):
            x *= np.float32(boost)
    elif kind == 'normal':
        x = rng.standard_normal(n, dtype=np.float32)
        x *= np.float32(init[1])
    elif kind == 'bias':
        x = rng.standard_normal(n, dtype=np.float32)
        x *= np.float32(0.02)
        if isinstance(init, tuple) and init[1] in ('query', 'key'):
            x *= np.float32(boost)
    elif kind == 'ln1':  # CLIP LayerNorm: y * scale -> scale around 1
        x = rng.standard_normal(n, dtype=np.float32)
        x *= np.float32(0.1)
        x += np.float32(1.0)
    elif kind == 'ln0':  # MagicLens LayerNorm: y * (1 + scale) -> scale around 0
        x = rng.standard_normal(n, dtype=np.float32)
        x *= np.float32(0.1)
    elif kind == 'const':
        x = np.full(n, init[1], dtype=np.float32)
    else:
        raise ValueError(init)
    return x.reshape(shape)


def build_tree(cfg, seed, dtype, boost, order):
    specs = param_specs(cfg)
    rng = np.random.default_rng(seed)
    flat = []
    for path, shape, init in specs:
        x = make_value(rng, shape, init, boost)
        flat.append((path, Leaf(shape, dtype, to_dtype(x, dtype))))
        del x
    if order == 'shuffle':
        perm = np.random.default_rng(seed + 1).permutation(len(flat))
        flat = [flat[i] for i in perm]
    tree = {}
    for path, leaf in flat:
        node = tree
        parts = path.split('/')
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = leaf
    if order == 'sorted':
        tree = _sorted(tree)
    return {'params': tree}


def _sorted(d):
    # jax.tree_util flattens / rebuilds dicts with sorted keys; any params
    # tree that went through tree_map / device_get has this order.
    return {k: (_sorted(d[k]) if isinstance(d[k], dict) else d[k]) for k in sorted(d)}


def chunk_in_place(d, max_bytes):
    """flax _chunk_array_leaves_in_place with MAX_CHUNK_SIZE = max_bytes."""
    for k, v in d.items():
        if isinstance(v, Leaf):
            if v.nbytes > max_bytes:
                chunksize = max(1, int(max_bytes / v.itemsize))
                flat = v.arr.reshape(-1)
                chunks = {}
                for ci, i in enumerate(range(0, flat.size, chunksize)):
                    c = flat[i:i + chunksize]
                    chunks[str(ci)] = Leaf((c.size,), v.dtype, c)
                d[k] = {'__msgpack_chunked_array__': True,
                        'shape': {str(i): s for i, s in enumerate(v.shape)},
                        'chunks': chunks}
        elif isinstance(v, dict):
            chunk_in_place(v, max_bytes)


def _ext_pack(x):
    if isinstance(x, Leaf):
        payload = msgpack.packb((x.shape, x.dtype, x.arr.tobytes('C')),
                                use_bin_type=True)
        return msgpack.ExtType(1, payload)
    raise TypeError('cannot serialize %r' % type(x))


def pack_pieces(tree, chunk_bytes=2 ** 30):
    """flax msgpack_serialize(tree) as a list of byte pieces whose
    concatenation equals msgpack.packb(tree, default=..., strict_types=True).
    Array data is released leaf by leaf, so at most ~1 copy of the weights
    is alive at any time."""
    chunk_in_place(tree, chunk_bytes)
    packer = msgpack.Packer(default=_ext_pack, strict_types=True,
                            use_bin_type=True, autoreset=True)
    pieces = []

    def walk(d):
        pieces.append(packer.pack_map_header(len(d)))
        for k in list(d.keys()):
            v = d[k]
            pieces.append(packer.pack(k))
            if isinstance(v, dict):
                walk(v)
            else:
                pieces.append(packer.pack(v))
            d[k] = None  # drop our reference to the array
    walk(tree)
    return pieces


def to_bytes(tree, chunk_bytes=2 ** 30):
    return b''.join(pack_pieces(tree, chunk_bytes))


_FRAME_SIZE_TARGET = 64 * 1024  # pickle's framer threshold


def write_pickle(f, payload, protocol):
    """Write exactly what pickle.dump(b''.join(payload), f, protocol) writes.
    `payload` is bytes or a list of byte pieces (streamed, not joined)."""
    pieces = [payload] if isinstance(payload, (bytes, bytearray)) else payload
    n = sum(len(p) for p in pieces)
    if protocol not in (2, 3, 4, 5):
        raise ValueError('protocol must be 2..5')
    if protocol == 2:
        if n == 0:
            f.write(pickle.dumps(b'', protocol=2))
            return
        # \x80\x02 c_codecs\nencode\n q\0 X <u32 utf8 len> <latin1 as utf8> q\1
        # X\6\0\0\0latin1 q\2 \x86 q\3 R q\4 .
        n_hi = sum(int(np.count_nonzero(np.frombuffer(p, dtype=np.uint8) >= 0x80))
                   for p in pieces)
        ulen = n + n_hi
        if ulen > 0xFFFFFFFF:
            raise ValueError('payload too large for protocol 2')
        f.write(b'\x80\x02c_codecs\nencode\nq\x00X' + struct.pack('<I', ulen))
        step = 1 << 24
        for p in pieces:
            for i in range(0, len(p), step):
                f.write(bytes(p[i:i + step]).decode('latin-1').encode('utf-8'))
        f.write(b'q\x01X\x06\x00\x00\x00latin1q\x02\x86q\x03Rq\x04.')
        return
    if n < _FRAME_SIZE_TARGET:
        pickle.dump(b''.join(pieces), f, protocol=protocol)
        return
    if n > 0xFFFFFFFF:
        if protocol < 4:
            raise ValueError('payload too large for protocol 3')
        head = b'\x8e' + struct.pack('<Q', n)          # BINBYTES8
    else:
        head = b'B' + struct.pack('<I', n)             # BINBYTES
    f.write(b'\x80' + bytes([protocol]) + head)
    for p in pieces:
        f.write(p)
    f.write(b'q\x00.' if protocol == 3 else b'\x94.')  # BINPUT 0 / MEMOIZE


def selftest():
    ok = True
    for p in (2, 3, 4, 5):
        for n in (0, 1, 255, 256, 65535, 65536, 70000, 300000):
            payload = bytes(np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8))
            good = pickle.dumps(payload, protocol=p)
            for form in (payload, [payload[:n // 3], payload[n // 3:]]):
                buf = io.BytesIO()
                write_pickle(buf, form, p)
                if buf.getvalue() != good:
                    print('MISMATCH protocol', p, 'len', n)
                    ok = False
    print('selftest', 'ok' if ok else 'FAILED')
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--size', choices=sorted(SIZES), default='tiny')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--dtype', choices=['float32', 'bfloat16', 'float16'], default='float32')
    ap.add_argument('--protocol', type=int, choices=[2, 3, 4, 5], default=4)
    ap.add_argument('--chunk-bytes', type=int, default=2 ** 30)
    ap.add_argument('--logit-boost', type=float, default=1.0,
                    help='multiply fusion & pooling query/key kernels and biases '
                         '(logits scale by X^2) to exercise the 50*tanh(x/50) cap')
    ap.add_argument('--key-order', choices=['sorted', 'spec', 'shuffle'], default='sorted')
    ap.add_argument('--out')
    ap.add_argument('--selftest', action='store_true')
    a = ap.parse_args(argv)
    if a.selftest:
        return 0 if selftest() else 1
    if not a.out:
        ap.error('--out is required')
    t0 = time.time()
    tree = build_tree(SIZES[a.size], a.seed, a.dtype, a.logit_boost, a.key_order)
    t1 = time.time()
    payload = pack_pieces(tree, a.chunk_bytes)
    del tree
    t2 = time.time()
    tmp = a.out + '.tmp'
    with open(tmp, 'wb') as f:
        write_pickle(f, payload, a.protocol)
    os.replace(tmp, a.out)
    t3 = time.time()
    print('%s: size=%s dtype=%s protocol=%d payload=%d bytes '
          '(generate %.1fs, msgpack %.1fs, write %.1fs)'
          % (a.out, a.size, a.dtype, a.protocol, sum(len(p) for p in payload), t1 - t0, t2 - t1, t3 - t2),
          file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
