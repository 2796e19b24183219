#!/usr/bin/python3
"""Compare two training runs: the losses in DIR/log.jsonl step by step and
the weights of DIR/final.mlens tensor by tensor, within a relative tolerance.

  compare_train.py DIR_A DIR_B TOL

Also usable as a module: read_mlens(path) -> {name: np.ndarray} parses the
native model file from its documented layout (docs/native-format.md),
independently of the C reader.
"""
import json
import struct
import sys
import zlib

import numpy as np

DTYPES = {0: np.float32, 1: np.float16, 3: np.uint8}


def read_mlens(path):
    data = open(path, "rb").read()
    if data[:8] != b"MLENS\r\x1a\n":
        raise ValueError("%s: not a .mlens file" % path)
    version, header_size, file_size, count, dir_off, dir_size, data_off, flags, crc = \
        struct.unpack_from("<IIQQQQQII", data, 8)
    assert version == 1 and header_size == 64 and file_size == len(data) and flags == 0
    assert zlib.crc32(data[:60] + data[dir_off:dir_off + dir_size]) == crc
    out, p = {}, dir_off
    for _ in range(count):
        off, nbytes, dcrc, dtype, ndim, name_len = struct.unpack_from("<QQIBBH", data, p)
        shape = struct.unpack_from("<8q", data, p + 24)[:ndim]
        name = data[p + 88:p + 88 + name_len].decode()
        p += (88 + name_len + 7) // 8 * 8
        raw = data[off:off + nbytes]
        assert zlib.crc32(raw) == dcrc, name
        if dtype == 2:  # bfloat16 -> float32
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, DTYPES[dtype])
        out[name] = arr.reshape(shape)
    return out


def losses(d):
    return [json.loads(l)["loss"] for l in open(d + "/log.jsonl") if '"loss"' in l]


def main():
    a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
    la, lb = losses(a), losses(b)
    assert len(la) == len(lb) and la, (la, lb)
    for i, (x, y) in enumerate(zip(la, lb)):
        if abs(x - y) > tol * max(1.0, abs(x)):
            sys.exit("step %d: loss %r vs %r" % (i + 1, x, y))
    wa, wb = read_mlens(a + "/final.mlens"), read_mlens(b + "/final.mlens")
    assert sorted(wa) == sorted(wb)
    worst = 0.0
    for k in wa:
        if k.startswith(("meta/", "vocab/")):
            continue
        x, y = wa[k].astype(np.float64), wb[k].astype(np.float64)
        err = np.abs(x - y).max() / max(np.abs(x).max(), 1e-6) if x.size else 0.0
        worst = max(worst, err)
        if err > tol:
            sys.exit("%s: relative difference %.3g over %g" % (k, err, tol))
    print("runs agree: %d steps, %d tensors, worst relative weight difference %.3g"
          % (len(la), len(wa), worst))


if __name__ == "__main__":
    main()
