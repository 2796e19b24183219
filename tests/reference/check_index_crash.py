#!/usr/bin/python3
"""kill -9 at random points while indexing, many times, then resume.

usage: check_index_crash.py ML_BINARY MODEL.pkl WORKDIR [ROUNDS] [SEED]

Each round starts `magiclens index --verbose` (one commit per small batch)
and kills it with SIGKILL at a random moment: before the first commit, or
right after the n-th "committed" line it has read (n random).  After every
kill the index must open, hold every item acknowledged so far, and have no
duplicate ids or paths.  Some rounds delete files first, so deletions are
interrupted too.  Finally a full run completes and the index must equal the
float64 reference for exactly the files present.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def export(ml, index, out):
    shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run([ml, 'export', '--index', index, '--output', out], capture_output=True,
                       text=True)
    if r.returncode != 0:
        sys.exit(f"index does not open after a kill: {r.stderr}")
    meta = [json.loads(ln) for ln in open(os.path.join(out, 'metadata.jsonl'))]
    ids = [m['id'] for m in meta]
    paths = [m['path'] for m in meta]
    if len(set(ids)) != len(ids) or len(set(paths)) != len(paths):
        sys.exit("duplicate ids or paths after a kill")
    return meta, np.load(os.path.join(out, 'embeddings.npy'))


def make_images(folder, first, n, rng):
    os.makedirs(folder, exist_ok=True)
    for i in range(first, first + n):
        a = (rng.random((40 + i % 17, 56, 3)) * 255).astype(np.uint8)
        Image.fromarray(a).save(os.path.join(folder, f'img{i:04d}.png'))


def one_round(ml, model, gal, index, rng, rnd):
    """Runs one indexing pass and kills it; returns the items acknowledged."""
    cmd = [ml, 'index', '--model', model, '--precision', 'fp32', '--images', gal, '--output',
           index, '--batch', '1', '--verbose', '--quiet', '--threads', '1']
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    target = rng.choice([0, 0, 1, 2, 3, 5, 10, 20, 30])
    acked = 0
    if target == 0:
        # Somewhere during start-up, planning or deletion: a random delay.
        try:
            p.wait(timeout=rng.random() * 0.05)
        except subprocess.TimeoutExpired:
            pass
    else:
        for line in p.stderr:
            if line.startswith('committed '):
                acked = int(line.split()[1])
                if acked >= target:
                    break
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait()
    p.stderr.close()
    return acked, p.returncode


def main():
    ml, model, work = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 15
    rng = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else 1)
    nrng = np.random.default_rng(1)
    shutil.rmtree(work, ignore_errors=True)
    gal, index, out = (os.path.join(work, d) for d in ('gallery', 'x.mlindex', 'export'))
    nimg = 0
    present = set()  # paths acknowledged and still on disk
    killed = 0
    for rnd in range(rounds):
        make_images(gal, nimg, 40, nrng)  # fresh work every round
        nimg += 40
        if rnd % 4 == 3:  # interrupt deletions too
            files = sorted(os.listdir(gal))
            for f in rng.sample(files, 5):
                os.remove(os.path.join(gal, f))
        before, _ = export(ml, index, out) if os.path.exists(os.path.join(index, 'index.json')) \
            else ([], None)
        acked, rc = one_round(ml, model, gal, index, rng, rnd)
        killed += rc == -signal.SIGKILL
        if not os.path.exists(os.path.join(index, 'index.json')):
            if acked:
                sys.exit(f"round {rnd}: {acked} acknowledged but no index")
            continue
        meta, _ = export(ml, index, out)
        on_disk = {os.path.realpath(os.path.join(gal, f)) for f in os.listdir(gal)}
        paths = {m['path'] for m in meta}
        kept = {m['path'] for m in before} & on_disk
        if not kept <= paths:
            sys.exit(f"round {rnd}: items acknowledged earlier were lost: {sorted(kept - paths)[:3]}")
        new = len(paths & on_disk) - len(kept)
        if new < acked and not (paths - on_disk):
            sys.exit(f"round {rnd}: {acked} items acknowledged, only {new} new ones in the index")
        print(f"round {rnd}: rc {rc}, acknowledged {acked}, index holds {len(paths)}")
    if killed < rounds // 2:
        sys.exit(f"only {killed} of {rounds} runs were killed: the test did not test much")
    # Resume to completion.
    r = subprocess.run([ml, 'index', '--model', model, '--precision', 'fp32', '--images', gal,
                        '--output', index, '--quiet'], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"resume failed: {r.stderr}")
    meta, emb = export(ml, index, out)
    on_disk = sorted(os.path.realpath(os.path.join(gal, f)) for f in os.listdir(gal))
    if sorted(m['path'] for m in meta) != on_disk:
        sys.exit("after resuming, the index does not hold exactly the files present")
    items = os.path.join(work, 'ref.jsonl')
    with open(items, 'w') as f:
        for i, m in enumerate(meta):
            f.write(json.dumps({'id': i, 'image': m['path']}) + '\n')
    ref = os.path.join(work, 'ref.npy')
    subprocess.run(['/usr/bin/python3', os.path.join(HERE, 'ref_embed.py'), '--model', model,
                    '--input', items, '--output', ref], check=True, capture_output=True)
    diff = np.abs(np.load(ref) - emb).max()
    if diff > 1e-4:
        sys.exit(f"after resuming, embeddings differ from the reference by {diff}")
    print(f"ok  {rounds} rounds ({killed} killed), resumed: {len(meta)} items, max diff {diff:.1e}")


if __name__ == '__main__':
    main()
