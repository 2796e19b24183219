#!/usr/bin/env bash
# Training initialisation and Flax export (src/train/init.c, export_flax.c,
# `magiclens export --model`):
#  1. export of a released-format .pkl (via .mlens) is byte-identical to what
#     the Python writer (make_checkpoint.py, = flax to_bytes + pickle.dumps)
#     writes, also in flax's chunked form; embeddings of the export equal the
#     reference's;
#  2. Hugging Face CLIP safetensors (F32, BF16, F16; config.json heads) map to
#     exactly the tensors of an independent numpy mapping, and the CLIP
#     embeddings of the mapped model (Python reference) equal a forward pass
#     written in transformers' CLIPModel layout on the raw HF tensors;
#  3. the random fusion init equals an independent Python implementation of
#     the documented rule, bit for bit; seeds; shapes; statistics;
#  4. CLIP + random fusion: `magiclens embed` (.pkl and .mlens) equals the
#     float64 reference on the exported .pkl;
#  5. hostile safetensors files fail with exit status 1 and a clear message.
set -euo pipefail
PY=/usr/bin/python3
ML="$BUILD/magiclens"
T="$ML_TMP/train_init"
R="$PWD/tests/reference"
rm -rf "$T"; mkdir -p "$T/hf" "$T/hfb" "$T/hfh" "$T/hfc"

# ---- 1. .pkl -> .mlens -> .pkl round trip, byte for byte -----------------
$PY "$R/make_checkpoint.py" --size tiny --seed 7 --out "$T/x.pkl" 2> /dev/null
$PY "$R/make_checkpoint.py" --size tiny --seed 7 --chunk-bytes 50000 --out "$T/xc.pkl" 2> /dev/null
"$ML" convert --model "$T/x.pkl" --output "$T/x.mlens" --quiet
"$ML" export --model "$T/x.mlens" --format flax --output "$T/y.pkl" --quiet
cmp "$T/x.pkl" "$T/y.pkl"
"$ML" export --model "$T/x.mlens" --format flax --chunk-bytes 50000 --output "$T/yc.pkl" --quiet
cmp "$T/xc.pkl" "$T/yc.pkl"
[ ! -e "$T/y.pkl.tmp" ]
# A bfloat16 checkpoint exports as float32 holding the same values.
$PY "$R/make_checkpoint.py" --size tiny --seed 8 --dtype bfloat16 --out "$T/xb.pkl" 2> /dev/null
"$ML" export --model "$T/xb.pkl" --format flax --output "$T/yb.pkl" --quiet
$PY - "$T" <<'PYEOF'
import sys
import numpy as np
sys.path.insert(0, 'tests/reference')
import magiclens_ref as ml
T = sys.argv[1]
for a, b, dt in (('x', 'y', 'float32'), ('x', 'yc', 'float32'), ('xb', 'yb', 'bfloat16')):
    pa, da = ml.load_checkpoint(f'{T}/{a}.pkl', with_dtypes=True)
    pb, db = ml.load_checkpoint(f'{T}/{b}.pkl', with_dtypes=True)
    assert sorted(pa) == sorted(pb), set(pa) ^ set(pb)
    assert set(da.values()) == {dt} and set(db.values()) == {'float32'}, (da, db)
    for k in pa:
        assert pa[k].shape == pb[k].shape and np.array_equal(pa[k], pb[k]), k
print('round trip: tensors equal')
PYEOF

# Images and instructions for the embedding checks.
$PY - "$T" <<'PYEOF'
import json, sys
import numpy as np
from PIL import Image
T = sys.argv[1]
rng = np.random.default_rng(1)
items = []
for i, (w, h) in enumerate([(224, 224), (300, 200), (160, 240)]):
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * (i + 1)) % 256, (yy * 3) % 256, ((xx + yy) * (2 - i % 2)) % 256], -1)
    px = np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(px).save(f'{T}/img{i}.png')
for i, text in enumerate(['a red one', '', 'find this object in a sketch', 'blue sky']):
    items.append({'id': i, 'image': f'img{i % 3}.png', 'text': text})
with open(f'{T}/items.jsonl', 'w') as f:
    f.write(''.join(json.dumps(it) + '\n' for it in items))
PYEOF
embed_vs_ref() { # model-for-C  model-for-reference  name
    "$ML" embed --precision fp32 --model "$1" --input "$T/items.jsonl" --output "$T/$3.c.npy" --quiet
    $PY "$R/ref_embed.py" --model "$2" --input "$T/items.jsonl" --output "$T/$3.ref.npy" \
        ${4:+--clip-out "$4"} 2> /dev/null
    $PY "$R/compare_npy.py" "$T/$3.c.npy" "$T/$3.ref.npy" --max-abs 1e-5
}
embed_vs_ref "$T/y.pkl" "$T/x.pkl" roundtrip
"$ML" embed --precision fp32 --model "$T/x.pkl" --input "$T/items.jsonl" --output "$T/x.c.npy" --quiet
cmp "$T/x.c.npy" "$T/roundtrip.c.npy"

# ---- 2./3./4. Hugging Face CLIP + random fusion --------------------------
$PY "$R/make_hf_clip.py" --seed 3 --out "$T/hf/model.safetensors"
$PY "$R/make_hf_clip.py" --seed 4 --dtype BF16 --out "$T/hfb/model.safetensors"
$PY "$R/make_hf_clip.py" --seed 5 --dtype F16 --vision-heads 4 --text-heads 2 \
    --out "$T/hfh/model.safetensors"
exp() { "$ML" export --model "$1/model.safetensors" --init-fusion random --quiet "${@:2}"; }
exp "$T/hf" --seed 11 --format flax --output "$T/hf.pkl"
exp "$T/hf" --seed 11 --format flax --output "$T/hf_again.pkl"
exp "$T/hf" --seed 12 --format flax --output "$T/hf_seed12.pkl"
exp "$T/hf" --seed 11 --format mlens --output "$T/hf.mlens"
exp "$T/hfb" --seed 0 --format flax --output "$T/hfb.pkl"
exp "$T/hfh" --seed 99 --format flax --output "$T/hfh.pkl"
cmp "$T/hf.pkl" "$T/hf_again.pkl"
! cmp -s "$T/hf.pkl" "$T/hf_seed12.pkl"
# A released-format checkpoint with its fusion layers re-initialised.
"$ML" export --model "$T/x.pkl" --init-fusion random --seed 11 --format flax --output "$T/xr.pkl" --quiet
for s in 1 2 3 4 5 6; do exp "$T/hf" --seed $s --format flax --output "$T/q$s.pkl"; done

$PY - "$T" <<'PYEOF'
import sys
import numpy as np
sys.path.insert(0, 'tests/reference')
import magiclens_ref as ml
import make_hf_clip as mh
T = sys.argv[1]

def same(got, exp, what):
    assert sorted(got) == sorted(exp), (what, set(got) ^ set(exp))
    for k in exp:
        e = exp[k][0] if isinstance(exp[k], tuple) else exp[k]
        assert got[k].shape == e.shape, (what, k, got[k].shape, e.shape)
        assert np.array_equal(got[k].astype(np.float32), e), (what, k)

for d, pkl, seed, vh, th in (('hf', 'hf', 11, 0, 0), ('hfb', 'hfb', 0, 0, 0),
                             ('hfh', 'hfh', 99, 4, 2)):
    got, dts = ml.load_checkpoint(f'{T}/{pkl}.pkl', with_dtypes=True)
    assert set(dts.values()) == {'float32'}
    clip = {k: v for k, v in got.items() if k.startswith('clip/')}
    fus = {k: v for k, v in got.items() if not k.startswith('clip/')}
    same(clip, mh.expected_flax(f'{T}/{d}/model.safetensors', vh, th), d + ' clip')
    same(fus, mh.fusion_init(64, seed), d + ' fusion')
    print(f'{d}: {len(clip)} CLIP tensors equal the numpy mapping, '
          f'{len(fus)} fusion tensors equal the documented init (seed {seed})')
got = ml.load_checkpoint(f'{T}/hfh.pkl')
assert got['clip/visual/transformer/resblocks_1/attn/query/kernel'].shape == (128, 4, 32)
assert got['clip/text/transformer/resblocks_0/attn/out/kernel'].shape == (2, 32, 64)
assert got['multimodal_encoder/x_layers_3/self_attention/post/w'].shape == (64, 1, 64)
assert got['contrastive_multimodal_pooler/pool_attn/query/w'].shape == (64, 1, 256)
assert got['contrastive_multimodal_pooler/pool_attn/per_dim_scale/per_dim_scale'].shape == (256,)
assert got['contrastive_multimodal_pooler/pooling_attn_query'].shape == (1, 64)
assert got['clip/logit_scale'].shape == ()

# Seeds: a different seed changes every random tensor, nothing else.
a, b = ml.load_checkpoint(f'{T}/hf.pkl'), ml.load_checkpoint(f'{T}/hf_seed12.pkl')
ref = mh.fusion_init(64, 11)
for k in a:
    differ = not np.array_equal(a[k], b[k])
    assert differ == (k in ref and ref[k][1] != 'zero'), k

# Statistics of the random tensors against the documented distributions.
for k, (v, kind, p) in ref.items():
    x = a[k].ravel()
    if kind == 'zero':
        assert not x.any(), k
    elif kind == 'xavier':
        assert np.abs(x).max() <= p and abs(x.std() / (p / 3 ** 0.5) - 1) < 0.1, (k, x.std(), p)
        assert abs(x.mean()) < 0.1 * p, k
q = np.concatenate([ml.load_checkpoint(f'{T}/q{s}.pkl')
                    ['contrastive_multimodal_pooler/pooling_attn_query'].ravel() for s in range(1, 7)])
assert abs(q.std() / 64 ** -0.5 - 1) < 0.1 and abs(q.mean()) < 0.03, (q.std(), q.mean())
print(f'fusion statistics ok; pooling query std {q.std():.4f} (documented {64 ** -0.5:.4f}) '
      f'over {q.size} values')

# A .pkl with --init-fusion random: CLIP kept, fusion replaced.
x, xr = ml.load_checkpoint(f'{T}/x.pkl'), ml.load_checkpoint(f'{T}/xr.pkl')
same({k: v for k, v in xr.items() if k.startswith('clip/')},
     {k: v.astype(np.float32) for k, v in x.items() if k.startswith('clip/')}, 'x clip')
same({k: v for k, v in xr.items() if not k.startswith('clip/')}, mh.fusion_init(64, 11), 'x fusion')
print('pkl re-initialisation ok')
PYEOF

embed_vs_ref "$T/hf.pkl" "$T/hf.pkl" hf "$T/hf.clip.npy"
embed_vs_ref "$T/hf.mlens" "$T/hf.pkl" hfmlens
embed_vs_ref "$T/hfh.pkl" "$T/hfh.pkl" hfh "$T/hfh.clip.npy"
"$ML" embed --precision fp32 --model "$T/hf.mlens" --image "$T/img0.png" --text "a red one" > /dev/null

# The mapped CLIP towers compute what transformers' CLIPModel computes.
$PY - "$T" <<'PYEOF'
import json, sys
import numpy as np
sys.path.insert(0, 'tests/reference')
import magiclens_ref as ml
import make_hf_clip as mh
import ref_embed
T = sys.argv[1]
items = [json.loads(l) for l in open(f'{T}/items.jsonl')]
tok = ml.Tokenizer(ref_embed.default_vocab())
px = np.stack([ml.preprocess(ml.load_image(f"{T}/{it['image']}"), 224) for it in items])
ids = np.array([tok.tokenize(it['text']) for it in items])
for d, vh, th in (('hf', 0, 0), ('hfh', 4, 2)):
    img, txt = mh.hf_clip_embed(mh.read_safetensors(f'{T}/{d}/model.safetensors'), px, ids, vh, th)
    clip = np.load(f'{T}/{d}.clip.npy')
    for name, hf, ours in (('image', img, clip[:, 0]), ('text', txt, clip[:, 1])):
        err = np.abs(hf - ours).max() / np.abs(hf).max()
        assert err < 1e-9, (d, name, err)
    # heads matter: the wrong split must not agree
    if vh:
        img2, _ = mh.hf_clip_embed(mh.read_safetensors(f'{T}/{d}/model.safetensors'), px, ids)
        assert np.abs(img2 - clip[:, 0]).max() > 1e-6
    print(f'{d}: HF-layout CLIP forward equals the mapped model (image and text towers)')
PYEOF

# ---- 5. hostile safetensors files ----------------------------------------
check_bad() { # kind  expected-message-fragment
    $PY "$R/make_hf_clip.py" --corrupt "$1" --src "$T/hf/model.safetensors" --out "$T/hfc/model.safetensors"
    set +e
    "$ML" export --model "$T/hfc/model.safetensors" --init-fusion random --format flax \
        --output "$T/bad.pkl" 2> "$T/bad.err"
    rc=$?
    set -e
    echo "$1: rc=$rc: $(cat "$T/bad.err")"
    [ "$rc" -eq 1 ] || { echo "expected exit status 1"; exit 1; }
    grep -q "model.safetensors" "$T/bad.err" && grep -q -- "$2" "$T/bad.err"
    [ ! -e "$T/bad.pkl" ] && [ ! -e "$T/bad.pkl.tmp" ]
}
check_bad short "too short"
check_bad hdrlen "header length"
check_bad truncated "data_offsets out of range"
check_bad offsets "data_offsets out of range"
check_bad dtype "dtype I32"
check_bad missing "no tensor 'vision_model.post_layernorm.weight'"
check_bad shape "shape needs"
check_bad badjson "not valid JSON"
check_bad notobject "not a JSON object"
# Bad options and missing fusion init.
set +e
"$ML" export --model "$T/hf/model.safetensors" --format flax --output "$T/bad.pkl" 2> "$T/e1"; r1=$?
"$ML" export --model "$T/hf/model.safetensors" --init-fusion zeros --output "$T/bad.pkl" 2> "$T/e2"; r2=$?
"$ML" export --model "$T/x.pkl" --format onnx --output "$T/bad.pkl" 2> "$T/e3"; r3=$?
"$ML" export --model "$T/x.pkl" --seed -1 --output "$T/bad.pkl" 2> "$T/e4"; r4=$?
set -e
cat "$T/e1" "$T/e2" "$T/e3" "$T/e4"
[ "$r1" -eq 1 ] && grep -q "init-fusion random" "$T/e1"
[ "$r2" -eq 1 ] && grep -q "unknown fusion initialisation 'zeros'" "$T/e2"
[ "$r3" -eq 2 ] && [ "$r4" -eq 2 ]
[ ! -e "$T/bad.pkl" ]
echo "t_train_init: all checks passed"
