#!/usr/bin/python3
"""Damaged, foreign or mismatched index files are refused with a clear
message naming the file (exit status 1, never a crash), and a torn tail
(bytes past the committed end, as a crash mid-write leaves) is ignored.

usage: check_index_corrupt.py ML_BINARY MODEL.pkl OTHER_MODEL.pkl WORKDIR IMAGES_DIR
"""
import json
import re
import os
import shutil
import subprocess
import sys

HEADER = 512


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def must(cmd):
    r = run(cmd)
    if r.returncode != 0:
        sys.exit(f"FAILED: {' '.join(cmd)}\n{r.stderr}")
    return r


def main():
    ml, model, other, work, images = sys.argv[1:6]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    good = os.path.join(work, 'good.mlindex')
    must([ml, 'index', '--model', model, '--precision', 'fp32', '--images', images, '--output',
          good, '--quiet'])
    shard = os.path.join(good, 'shard-0000.log')
    size = os.path.getsize(shard)
    baseline = must([ml, 'export', '--index', good, '--output', os.path.join(work, 'e0')])

    def damaged(name, mutate, expect, only=None):
        d = os.path.join(work, name + '.mlindex')
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(good, d)
        mutate(d)
        for cmd in ([ml, 'export', '--index', d, '--output', os.path.join(work, 'e_' + name)],
                    [ml, 'search', '--index', d, '--model', model, '--text', 'x'],
                    [ml, 'index', '--model', model, '--images', images, '--output', d]):
            if only and cmd[1] not in only:
                continue
            r = run(cmd)
            if r.returncode != 1:
                sys.exit(f"{name}: {cmd[1]} exited {r.returncode} (want 1)\n{r.stderr}")
            if not any(e in r.stderr for e in expect):
                sys.exit(f"{name}: {cmd[1]}: message lacks {expect}:\n{r.stderr}")
        print(f"ok  {name}: {r.stderr.strip().splitlines()[-1]}")

    def patch(rel, off, data):
        def f(d):
            with open(os.path.join(d, rel), 'r+b') as fh:
                fh.seek(off)
                fh.write(data)
        return f

    def flip(rel, off):
        def f(d):
            p = os.path.join(d, rel)
            b = bytearray(open(p, 'rb').read())
            b[off] ^= 0x10
            open(p, 'wb').write(b)
        return f

    def truncate(rel, n):
        def f(d):
            os.truncate(os.path.join(d, rel), n)
        return f

    def manifest(edit):
        def f(d):
            p = os.path.join(d, 'index.json')
            j = json.load(open(p))
            edit(j)
            json.dump(j, open(p, 'w'))
        return f

    sh = 'shard-0000.log'
    for n in (size - 8, size - 1000, HEADER + 100, HEADER, 100):
        damaged(f'truncated_{n}', truncate(sh, n), [sh])
    damaged('truncated_0', truncate(sh, 0), ['not a magiclens index shard'])
    for off in (HEADER + 3, HEADER + 20, HEADER + 100, size // 2, size - 3):
        damaged(f'flip_{off}', flip(sh, off), ['corrupt record', 'malformed'])
    damaged('flip_header', flip(sh, 30), ['corrupt shard header', 'another index'])
    damaged('flip_slots', lambda d: (flip(sh, 64)(d), flip(sh, 96)(d)), ['no valid commit slot'])
    damaged('shard_version', patch(sh, 8, b'\x07\x00\x00\x00'), ['shard format version 7'])
    damaged('manifest_version', manifest(lambda j: j.update(version=2)),
            ['index format version 2'])
    damaged('manifest_garbage', lambda d: open(os.path.join(d, 'index.json'), 'w').write('{"fo'),
            ['corrupt manifest'])
    damaged('manifest_missing', lambda d: os.remove(os.path.join(d, 'index.json')),
            ['no index.json'])
    damaged('manifest_dim', manifest(lambda j: j.update(dim=-5)), ['corrupt manifest'])
    damaged('manifest_more_shards', manifest(lambda j: j.update(shards=3)), ['shard-0001.log'])
    damaged('foreign_shard', lambda d: open(os.path.join(d, sh), 'wb').write(os.urandom(4096)),
            ['not a magiclens index shard'])
    png = sorted(f for f in os.listdir(images) if f.endswith('.png'))[0]
    damaged('png_as_shard', lambda d: shutil.copy(os.path.join(images, png), os.path.join(d, sh)),
            ['not a magiclens index shard'])
    other_ix = os.path.join(work, 'other.mlindex')
    must([ml, 'index', '--model', model, '--images', os.path.join(images, png), '--output',
          other_ix, '--quiet'])
    damaged('shard_of_other_index',
            lambda d: shutil.copy(os.path.join(other_ix, sh), os.path.join(d, sh)),
            ['belongs to another index'])

    # A torn tail (uncommitted bytes) is ignored, then overwritten by the next writer.
    d = os.path.join(work, 'torn.mlindex')
    shutil.copytree(good, d)
    with open(os.path.join(d, sh), 'ab') as fh:
        fh.write(b'MLRC' + os.urandom(3000))
    r = must([ml, 'export', '--index', d, '--output', os.path.join(work, 'e_torn')])
    def count(stderr):
        return int(re.search(r': (\d+) items ->', stderr).group(1))

    n0 = count(baseline.stderr)
    if count(r.stderr) != n0:
        sys.exit(f"torn tail changed the content: {r.stderr} vs {baseline.stderr}")
    extra = os.path.join(work, 'extra.png')
    shutil.copy(os.path.join(images, png), extra)
    must([ml, 'index', '--model', model, '--add', extra, '--output', d, '--quiet'])
    if os.path.getsize(os.path.join(d, sh)) >= size + 3004 + 4096 + 600:
        sys.exit("the torn tail was not cut off before appending")
    r = must([ml, 'export', '--index', d, '--output', os.path.join(work, 'e_torn2')])
    if count(r.stderr) != n0 + 1:
        sys.exit(f"after a torn tail and --add: {r.stderr}")
    print("ok  torn tail ignored and cut off by the next writer")

    # Another model: search and index refuse; the message names both fingerprints.
    for cmd in ([ml, 'search', '--index', good, '--model', other, '--text', 'x'],
                [ml, 'index', '--model', other, '--images', images, '--output', good]):
        r = run(cmd)
        if r.returncode != 1 or 'another model' not in r.stderr:
            sys.exit(f"other model accepted by {cmd[1]}: {r.returncode} {r.stderr}")
    print("ok  another model refused")

    # ANN files: damaged or mismatched ones are refused, not used.
    must([ml, 'index', '--output', good, '--ann', '--nlist', '4', '--quiet'])
    # (only search reads them; export and index do not need them)
    damaged('ann_ids_flip', flip('ann.ids', 40), ['ann.ids'], only=['search'])
    damaged('ann_ivf_truncated', truncate('ann.ivf', 64), ['ann.ivf', 'ann.ids'], only=['search'])
    damaged('ann_ivf_flip', flip('ann.ivf', 100), ['ann.ivf', 'ann.ids'], only=['search'])
    r = must([ml, 'search', '--index', good, '--model', model, '--text', 'x', '--exact'])
    print("ok  --exact ignores the ANN files")


if __name__ == '__main__':
    main()
