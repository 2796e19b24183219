#!/usr/bin/python3
"""Exports the MagicLens image path (bench/torch_model.py, float32) to ONNX
for bench/vs_onnxruntime.sh, and writes its dynamically quantised int8 twin.

  python3 bench/ort_export.py --model base.pkl --fp32 m.onnx --int8 m_int8.onnx

The export is torch.onnx (opset 17, constants folded; the batch is fixed at --batch: the
model's expand() of the class token does not export with a symbolic batch) of
TorchMagicLens.embed_images: pixels [B, 3, S, S] -> unit embeddings [B, D].

The int8 model is what onnxruntime.quantization.quantize_dynamic makes of it
with its defaults (weight type QInt8, per_channel=False), written here with
the onnx package alone: every MatMul / Gemm whose B is a float initializer
becomes com.microsoft DynamicQuantizeMatMul(A, B_s8, scale, zero_point=0
[, bias]): symmetric s8 weights with ONE scale per tensor (max|B| / 127),
activations quantised to u8 per call by ONNX Runtime.  Products of two
activations (attention scores) stay float32, as quantize_dynamic leaves
them."""
import argparse
import os
import sys

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'reference'))
import magiclens_ref as ml  # noqa: E402
from torch_model import TorchMagicLens  # noqa: E402


class _Wrap(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, px):
        return self.m.fuse(self.m.encode_images(px))


def export(model_path, out, batch):
    m = TorchMagicLens(ml.load_checkpoint(model_path), torch.float32)
    px = torch.randn(batch, 3, m.image_size, m.image_size)
    with torch.no_grad():
        torch.onnx.export(_Wrap(m), (px,), out, opset_version=17, input_names=['pixels'],
                          output_names=['embedding'], do_constant_folding=True)
    return m.image_size


def quantize_dynamic(src, dst):
    g = onnx.load(src)
    # torch.onnx writes the weights (plain tensors, not nn.Parameters) as
    # Constant nodes: make them initializers, as quantize_dynamic sees them
    # after its own pre-processing
    consts = [n for n in g.graph.node if n.op_type == 'Constant' and len(n.attribute) == 1
              and n.attribute[0].name == 'value']
    for n in consts:
        t = onnx.TensorProto()
        t.CopyFrom(n.attribute[0].t)
        t.name = n.output[0]
        g.graph.initializer.append(t)
    rest = [n for n in g.graph.node if not any(n is c for c in consts)]
    del g.graph.node[:]
    g.graph.node.extend(rest)
    inits = {t.name: t for t in g.graph.initializer}
    uses = {}
    for n in g.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    nodes, drop, count = [], set(), 0
    for n in g.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        w = inits.get(n.input[1]) if len(n.input) > 1 else None
        ok = w is not None and w.data_type == onnx.TensorProto.FLOAT and len(w.dims) == 2
        if n.op_type == 'Gemm':
            ok = ok and not attrs.get('transA', 0) and attrs.get('alpha', 1.0) == 1.0 \
                and attrs.get('beta', 1.0) == 1.0
        elif n.op_type != 'MatMul':
            ok = False
        if not ok:
            nodes.append(n)
            continue
        W = numpy_helper.to_array(w).astype(np.float32)
        if n.op_type == 'Gemm' and attrs.get('transB', 0):
            W = W.T
        mx = float(np.abs(W).max())
        scale = np.float32(mx / 127.0 if mx > 0 else 1.0)
        q = np.clip(np.rint(W / scale), -127, 127).astype(np.int8)
        base = n.name or n.output[0]
        qn, sn, zn = base + '_w_s8', base + '_w_scale', base + '_w_zero'
        g.graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(q), qn),
                                    numpy_helper.from_array(np.array(scale, np.float32), sn),
                                    numpy_helper.from_array(np.array(0, np.int8), zn)])
        ins = [n.input[0], qn, sn, zn]
        if n.op_type == 'Gemm' and len(n.input) > 2 and n.input[2]:
            ins.append(n.input[2])
        nodes.append(helper.make_node('DynamicQuantizeMatMul', ins, list(n.output),
                                      name=base + '_quant', domain='com.microsoft'))
        if uses.get(w.name, 0) == 1:
            drop.add(w.name)
        count += 1
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    keep = [t for t in g.graph.initializer if t.name not in drop]
    del g.graph.initializer[:]
    g.graph.initializer.extend(keep)
    if not any(o.domain == 'com.microsoft' for o in g.opset_import):
        g.opset_import.extend([helper.make_opsetid('com.microsoft', 1)])
    onnx.save(g, dst)
    return count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', required=True)
    ap.add_argument('--fp32', required=True)
    ap.add_argument('--int8', required=True)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--quantize-only', action='store_true', help='--fp32 exists: only write --int8')
    a = ap.parse_args()
    size = export(a.model, a.fp32, a.batch) if not a.quantize_only else 0
    n = quantize_dynamic(a.fp32, a.int8)
    print('{"image_size": %d, "quantized_matmuls": %d, "fp32_bytes": %d, "int8_bytes": %d}'
          % (size, n, os.path.getsize(a.fp32), os.path.getsize(a.int8)))


if __name__ == '__main__':
    main()
