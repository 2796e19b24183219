#!/usr/bin/python3
"""Generate a coloured-shapes triplet dataset for the training tests.

Each image shows one or two shapes (circle, square, triangle) in one colour,
small or big, at random positions on a lightly noisy background.  A triplet
pairs a query image with an instruction and the image that the instruction
describes:

  "same shape but {colour}"   -> same shape/size/count, another colour
  "two of them"               -> same shape/colour/size, two copies
  "the same object bigger"    -> same shape/colour, big instead of small
  "a {shape} of the same colour" -> another shape, same colour/size/count

Every image is drawn afresh (new positions and noise), so a target is never
a copy of anything in the training set.

Usage: make_shapes.py OUTDIR [--train N] [--heldout M] [--size 64] [--seed S]
writes OUTDIR/img/*.png, OUTDIR/train.jsonl and OUTDIR/heldout.jsonl
(paths relative to OUTDIR), and prints the counts.
"""
import argparse
import json
import os
import random

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle"]
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (40, 60, 220),
           "yellow": (230, 210, 20)}


def draw(rng, size, shape, colour, big, count):
    bg = np.full((size, size, 3), 235, np.int16)
    bg += np.array(rng.integers(-12, 13, (size, size, 1)), np.int16)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    r = size * (0.28 if big else 0.14)
    rgb = COLOURS[colour]
    centres = []
    for _ in range(count):
        for _try in range(50):
            if count == 1:
                cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            else:  # two copies side by side, in the left and right halves
                half = len(centres)
                lo = r + 1 + half * size / 2
                hi = max(lo + 1, (half + 1) * size / 2 - r - 1)
                cx, cy = rng.uniform(lo, hi), rng.uniform(r + 1, size - r - 1)
            if all(abs(cx - a) > 2 * r or abs(cy - b) > 2 * r for a, b in centres):
                break
        centres.append((cx, cy))
        box = [cx - r, cy - r, cx + r, cy + r]
        if shape == "circle":
            d.ellipse(box, fill=rgb)
        elif shape == "square":
            d.rectangle(box, fill=rgb)
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=rgb)
    return img


def make_triplet(rng):
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    kind = rng.integers(4)
    q = dict(shape=shape, colour=colour, big=False, count=1)
    t = dict(q)
    if kind == 0:
        t["colour"] = rng.choice([c for c in COLOURS if c != colour])
        text = "same shape but %s" % t["colour"]
    elif kind == 1:
        t["count"] = 2
        text = "two of them"
    elif kind == 2:
        t["big"] = True
        text = "the same object bigger"
    else:
        t["shape"] = rng.choice([s for s in SHAPES if s != shape])
        text = "a %s of the same colour" % t["shape"]
    if kind != 2 and rng.integers(2):  # vary the size where the instruction allows
        q["big"] = t["big"] = True
    return q, text, t


def write_split(rng, out, name, n, size):
    lines = []
    for i in range(n):
        q, text, t = make_triplet(rng)
        qp = "img/%s_%04d_q.png" % (name, i)
        tp = "img/%s_%04d_t.png" % (name, i)
        draw(rng, size, **q).save(os.path.join(out, qp))
        draw(rng, size, **t).save(os.path.join(out, tp))
        lines.append(json.dumps({"query_image": qp, "instruction": text, "target_image": tp,
                                 "target_attrs": t}))
    with open(os.path.join(out, name + ".jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--heldout", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "img"), exist_ok=True)
    rng = np.random.default_rng(a.seed)
    random.seed(a.seed)
    write_split(rng, a.out, "train", a.train, a.size)
    write_split(rng, a.out, "heldout", a.heldout, a.size)
    print("train %d heldout %d" % (a.train, a.heldout))


if __name__ == "__main__":
    main()
