"""The cost of the Python layer: `m.embed` on one batch of 8 images vs
`magiclens bench` (the C forward pass alone on ready pixels), interleaved
so that a noisy machine disturbs both alike.  docs/python.md has results.

usage: python bench/python_overhead.py MODEL.mlens ML_BINARY [rounds]
(run with a Python that has the magiclens package installed)

Prints the fixed cost of an (empty) embed call, then, per round and as medians, the ms per batch of 8 for: the CLI bench,
m.embed on 8 decoded 224x224 uint8 arrays, and on 8 JPEG files (decode and
preprocessing included, as the CLI's `embed` does them).
"""
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

import magiclens

model, ml = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
rng = np.random.default_rng(0)
arrays = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(8)]
tmp = tempfile.mkdtemp()
jpegs = []
for i in range(8):
    path = os.path.join(tmp, "%d.jpg" % i)
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(path, quality=90)
    jpegs.append(path)

m = magiclens.Model(model, precision="fp32")
m.embed(arrays)  # warm-up: packing, thread pool


def timed(images, n=3):
    best = []
    for _ in range(n):
        t0 = time.perf_counter()
        m.embed(images, batch=8)
        best.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(best)


# The fixed cost of a call (argument handling, the C entry, array allocation).
t0 = time.perf_counter()
for _ in range(2000):
    m.embed([])
call_us = (time.perf_counter() - t0) / 2000 * 1e6
print("empty embed call: %.1f us" % call_us, flush=True)

cli, arr, jpg = [], [], []
for r in range(rounds):
    out = subprocess.run([ml, "bench", "--model", model, "--batch", "8", "--precision", "fp32",
                          "--seconds", "5"], capture_output=True, text=True, check=True).stdout
    cli.append(8 * 1e3 / json.loads(out)["images_per_s"])
    arr.append(timed(arrays))
    jpg.append(timed(jpegs))
    print("round %d: bench %.1f ms, embed(arrays) %.1f ms, embed(jpeg files) %.1f ms per batch of 8"
          % (r + 1, cli[-1], arr[-1], jpg[-1]), flush=True)
c, a, j = statistics.median(cli), statistics.median(arr), statistics.median(jpg)
print(json.dumps({"model": os.path.basename(model), "isa": m.info["isa"],
                  "threads": m.info["threads"], "call_us": round(call_us, 1), "bench_ms": round(c, 1),
                  "embed_arrays_ms": round(a, 1), "embed_jpeg_ms": round(j, 1),
                  "overhead_arrays_pct": round(100 * (a - c) / c, 1),
                  "overhead_jpeg_pct": round(100 * (j - c) / c, 1)}))
