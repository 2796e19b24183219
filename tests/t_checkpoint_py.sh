#!/usr/bin/env bash
# Writes small .pkl checkpoints the way the released ones were made
# (pickle.dump(flax msgpack bytes, f, protocol=P) for P = 2..5) with Python's
# own pickle and msgpack, then has test_checkpoint load them and compare
# names, dtypes, shapes and element sums with the manifest Python wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${BUILD:-build}"
ML_TMP="${ML_TMP:-$PWD/$BUILD/test-tmp}"
bin="$BUILD/tests/test_checkpoint"
[ -x "$bin" ] || { echo "missing $bin (run make first)"; exit 1; }
dir="$ML_TMP/pkl_py"
rm -rf "$dir"; mkdir -p "$dir"
/usr/bin/python3 - "$dir" <<'PY'
import pickle, sys
import msgpack
import numpy as np

out = sys.argv[1]
rng = np.random.default_rng(0)

class BF16:
    """A bfloat16 array as flax writes it: dtype name 'bfloat16', 2-byte words."""
    def __init__(self, a):
        self.f32 = np.asarray(a, np.float32)
        self.words = (self.f32.view(np.uint32) >> 16).astype('<u2')
        self.f32 = (self.words.astype(np.uint32) << 16).view(np.float32)

def nd_bytes(shape, name, raw):  # flax _ndarray_to_bytes
    return msgpack.packb((tuple(shape), name, raw), use_bin_type=True)

def ext_pack(x):  # flax _msgpack_ext_pack
    if isinstance(x, BF16):
        return msgpack.ExtType(1, nd_bytes(x.words.shape, 'bfloat16', x.words.tobytes('C')))
    if isinstance(x, np.ndarray):
        return msgpack.ExtType(1, nd_bytes(x.shape, x.dtype.name, x.tobytes('C')))
    if isinstance(x, np.generic):
        a = np.asarray(x)
        return msgpack.ExtType(3, nd_bytes(a.shape, a.dtype.name, a.tobytes('C')))
    raise TypeError(type(x))

def chunk(a, n):  # flax _chunk with a tiny chunk size
    flat = a.reshape(-1)
    return {'__msgpack_chunked_array__': True,
            'shape': {str(i): d for i, d in enumerate(a.shape)},
            'chunks': {str(i): flat[j:j + n] for i, j in enumerate(range(0, flat.size, n))}}

big = rng.standard_normal(40000).astype(np.float32)  # > 64 KiB: pickled outside the frame
ch = rng.standard_normal((3, 5)).astype(np.float32)
tree = {'params': {
    'clip': {'visual': {'conv1': {'kernel': rng.standard_normal((2, 2, 3, 4)).astype(np.float32)},
                        'proj': {'kernel': big}},
             'logit_scale': np.float32(4.6052)},
    'multimodal_encoder': {'w16': rng.standard_normal((3, 5)).astype(np.float16),
                           'wbf': BF16(rng.standard_normal((7,))),
                           'w64': rng.standard_normal((2, 2)),
                           'i32': np.arange(-3, 3, dtype=np.int32),
                           'empty': {}},
    'chunky': chunk(ch, 4),
}}
payload = msgpack.packb(tree, default=ext_pack, strict_types=True)

expected = [  # name, dtype as loaded, array as float
    ('clip/visual/conv1/kernel', 'float32', tree['params']['clip']['visual']['conv1']['kernel']),
    ('clip/visual/proj/kernel', 'float32', big),
    ('clip/logit_scale', 'float32', np.asarray(np.float32(4.6052))),
    ('multimodal_encoder/w16', 'float16', tree['params']['multimodal_encoder']['w16']),
    ('multimodal_encoder/wbf', 'bfloat16', tree['params']['multimodal_encoder']['wbf'].f32),
    ('multimodal_encoder/w64', 'float32', tree['params']['multimodal_encoder']['w64'].astype(np.float32)),
    ('multimodal_encoder/i32', 'float32', np.arange(-3, 3)),
    ('chunky', 'float32', ch),
]
# A small tree too: protocols 4-5 put small payloads inside a FRAME.
small = np.array([0.5, -1.25, 3.0], np.float32)
small_payload = msgpack.packb({'params': {'x': small}}, default=ext_pack, strict_types=True)
with open(f'{out}/manifest.txt', 'w') as m:
    files = [(f'p{p}.pkl', p, payload, expected) for p in range(2, 6)]
    files.append(('p5_bytearray.pkl', 5, bytearray(payload), expected))
    files += [(f'small_p{p}.pkl', p, small_payload, [('x', 'float32', small)]) for p in range(2, 6)]
    for fname, proto, obj, expected in files:
        with open(f'{out}/{fname}', 'wb') as f:
            pickle.dump(obj, f, protocol=proto)
        m.write(f'count {fname} {len(expected)}\n')
        for name, dt, a in expected:
            a = np.asarray(a, np.float32)
            shape = ' '.join(str(d) for d in a.shape)
            m.write(f'{fname} {name} {dt} {a.ndim} {shape} {float(a.astype(np.float64).sum())!r}\n')
PY
"$bin" --pkl-dir "$dir"
