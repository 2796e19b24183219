#!/usr/bin/env python3
"""Compares C embeddings with reference embeddings, row by row.

usage: compare_npy.py C.npy|C.jsonl REF.npy [--min-cos 0.99999] [--max-abs 1e-4]
                      [--expect-nan I,J,...]

Every row must have cosine >= min-cos and max |diff| <= max-abs, except the
rows named in --expect-nan, which must be NaN in both files (items that
failed).  Prints the worst cosine and worst absolute difference."""
import argparse
import json
import sys

import numpy as np


def load(path):
    if path.endswith(".jsonl"):
        rows = []
        with open(path) as f:
            for line in f:
                o = json.loads(line)
                rows.append(o["embedding"] if "embedding" in o else None)
        dim = max(len(r) for r in rows if r is not None)
        return np.array([r if r is not None else [np.nan] * dim for r in rows], dtype=np.float64)
    return np.load(path).astype(np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("c")
    ap.add_argument("ref")
    ap.add_argument("--min-cos", type=float, default=0.99999)
    ap.add_argument("--max-abs", type=float, default=1e-4)
    ap.add_argument("--expect-nan", default="")
    a = ap.parse_args()
    c, r = load(a.c), load(a.ref)
    if c.shape != r.shape:
        print(f"shape mismatch: C {c.shape} vs reference {r.shape}")
        return 1
    nan_rows = {int(x) for x in a.expect_nan.split(",") if x}
    bad, worst_cos, worst_abs = 0, 1.0, 0.0
    for i in range(len(c)):
        if i in nan_rows:
            if not (np.isnan(c[i]).all() and np.isnan(r[i]).all()):
                print(f"row {i}: expected NaN (failed item) in both")
                bad += 1
            continue
        if not np.isfinite(c[i]).all() or not np.isfinite(r[i]).all():
            print(f"row {i}: non-finite values")
            bad += 1
            continue
        cos = float(c[i] @ r[i] / (np.linalg.norm(c[i]) * np.linalg.norm(r[i])))
        mad = float(np.abs(c[i] - r[i]).max())
        worst_cos, worst_abs = min(worst_cos, cos), max(worst_abs, mad)
        if cos < a.min_cos or mad > a.max_abs:
            print(f"row {i}: cosine {cos:.8f}, max abs diff {mad:.3g}")
            bad += 1
    # The check must be able to fail: distinct items must have distinct embeddings.
    good = [i for i in range(len(r)) if i not in nan_rows]
    if len(good) >= 2:
        g = r[good]
        sims = g @ g.T
        off = sims[~np.eye(len(good), dtype=bool)]
        print(f"reference off-diagonal cosine: min {off.min():.4f} max {off.max():.4f}")
        if np.median(off) > 0.9999:
            print("reference embeddings are degenerate (all items alike): this check could not fail")
            bad += 1
    print(f"{len(c)} rows, worst cosine {worst_cos:.9f}, worst max abs diff {worst_abs:.3g}, "
          f"{bad} bad")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
