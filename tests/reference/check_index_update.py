#!/usr/bin/python3
"""Incremental indexing: new, changed, touched and deleted files; --add and
--remove; tar shards and list files.  After every step the exported index
must hold exactly the expected paths, with embeddings equal to the float64
reference for the files' current content, and ids that are stable for
changed files and never reused.

usage: check_index_update.py ML_BINARY MODEL.pkl WORKDIR FIXTURES_DIR
"""
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAILED ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return r


STATS = re.compile(r': (\d+) items; (\d+) found, (\d+) added, (\d+) updated, (\d+) touched, '
                   r'(\d+) unchanged, (\d+) removed, (\d+) failed')


def stats(stderr):
    m = STATS.search(stderr)
    if not m:
        sys.exit(f"no summary line in:\n{stderr}")
    keys = 'items found added updated touched unchanged removed failed'.split()
    return dict(zip(keys, map(int, m.groups())))


def expect(label, got, **want):
    bad = {k: (got[k], v) for k, v in want.items() if got[k] != v}
    if bad:
        sys.exit(f"{label}: (got, expected) {bad}; all: {got}")
    print(f"ok  {label}: {got}")


class Checker:
    def __init__(self, ml, model, work):
        self.ml, self.model, self.work = ml, model, work
        self.index = os.path.join(work, 'x.mlindex')
        self.max_id = -1

    def index_cmd(self, *args):
        return stats(run([self.ml, 'index', '--model', self.model, '--precision', 'fp32',
                          '--output', self.index] + list(args)).stderr)

    def export(self):
        out = os.path.join(self.work, 'export')
        shutil.rmtree(out, ignore_errors=True)
        run([self.ml, 'export', '--index', self.index, '--output', out])
        meta = [json.loads(ln) for ln in open(os.path.join(out, 'metadata.jsonl'))]
        return meta, np.load(os.path.join(out, 'embeddings.npy'))

    def ref(self, paths):
        """Reference embeddings of the current bytes behind each index path."""
        items = os.path.join(self.work, 'ref.jsonl')
        tmp = os.path.join(self.work, 'members')
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        with open(items, 'w') as f:
            for i, p in enumerate(paths):
                if '.tar::' in p:  # extract the member to a file for the reference
                    tar, member = p.split('.tar::', 1)
                    with tarfile.open(tar + '.tar') as t:
                        data = t.extractfile(member).read()
                    p = os.path.join(tmp, f'{i}_' + os.path.basename(member))
                    open(p, 'wb').write(data)
                f.write(json.dumps({'id': i, 'image': p}) + '\n')
        out = os.path.join(self.work, 'ref.npy')
        run(['/usr/bin/python3', os.path.join(HERE, 'ref_embed.py'), '--model', self.model,
             '--input', items, '--output', out])
        return np.load(out)

    def verify(self, label, want_paths, ids_before=None):
        meta, emb = self.export()
        paths = [m['path'] for m in meta]
        if sorted(paths) != sorted(want_paths):
            sys.exit(f"{label}: index paths differ\n extra {set(paths) - set(want_paths)}\n "
                     f"missing {set(want_paths) - set(paths)}")
        if len(set(m['id'] for m in meta)) != len(meta):
            sys.exit(f"{label}: duplicate ids")
        ref = self.ref(paths)
        diff = np.abs(emb - ref).max() if len(paths) else 0.0
        if diff > 1e-4:
            sys.exit(f"{label}: embeddings differ from the reference by {diff}")
        ids = {m['path']: m['id'] for m in meta}
        if ids_before:
            for p, i in ids.items():
                if p in ids_before and ids_before[p] != i:
                    sys.exit(f"{label}: {p} changed id {ids_before[p]} -> {i}")
                if p not in ids_before and i <= self.max_id:
                    sys.exit(f"{label}: new item {p} reuses an old id {i} (max was {self.max_id})")
        self.max_id = max([self.max_id] + list(ids.values()))
        print(f"ok  {label}: {len(paths)} items match the reference (max diff {diff:.1e})")
        return ids


def main():
    ml, model, work, fx = sys.argv[1:5]
    shutil.rmtree(work, ignore_errors=True)
    gal, other = os.path.join(work, 'gallery'), os.path.join(work, 'other')
    os.makedirs(os.path.join(gal, 'sub'))
    os.makedirs(other)
    good = open(os.path.join(fx, 'good.txt')).read().split()
    names = [n for n in good if n.endswith(('.jpg', '.png'))][:14]
    for i, n in enumerate(names[:8]):
        shutil.copy(os.path.join(fx, n), os.path.join(gal, 'sub' if i % 2 else '', n))
    # A WebDataset-style shard: images plus a non-image member.
    tar_path = os.path.join(work, 'shard-000.tar')
    with tarfile.open(tar_path, 'w') as t:
        for j, n in enumerate(names[8:11]):
            t.add(os.path.join(fx, n), arcname=f'{j:06d}.{n.rsplit(".", 1)[1]}')
        info = tarfile.TarInfo('000000.json')
        info.size = 2
        t.addfile(info, io.BytesIO(b'{}'))
    # A list file naming images elsewhere (relative to the list's folder).
    for n in names[11:13]:
        shutil.copy(os.path.join(fx, n), os.path.join(other, n))
    lst = os.path.join(work, 'list.txt')
    with open(lst, 'w') as f:
        f.write('# images\n\n' + ''.join(f'other/{n}\n' for n in names[11:13]))

    c = Checker(os.path.abspath(ml), model, work)
    srcs = ['--images', gal, '--images', tar_path, '--images', lst]
    def files():
        out = []
        for root, _, fs in os.walk(os.path.realpath(gal)):
            out += [os.path.join(root, f) for f in fs]
        with tarfile.open(tar_path) as t:
            out += [os.path.realpath(tar_path) + '::' + m.name for m in t.getmembers()
                    if not m.name.endswith('.json')]
        out += [os.path.realpath(os.path.join(other, n)) for n in names[11:13]]
        return out

    expect('first run', c.index_cmd(*srcs), items=13, added=13, updated=0, removed=0, failed=0)
    ids = c.verify('first run', files())
    expect('no change', c.index_cmd(*srcs), items=13, added=0, updated=0, touched=0, unchanged=13)

    # new file, changed content, touched (same bytes, new mtime), deleted file
    shutil.copy(os.path.join(fx, names[13]), os.path.join(gal, 'sub', 'new_' + names[13]))
    changed = os.path.join(gal, names[0])
    shutil.copy(os.path.join(fx, names[10]), changed)
    touched = os.path.join(gal, names[2])
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    os.remove(os.path.join(gal, 'sub', names[1]))
    expect('after edits', c.index_cmd(*srcs), items=13, added=1, updated=1, touched=1, removed=1,
           unchanged=10)
    ids = c.verify('after edits', files(), ids)

    # --add one file from elsewhere: nothing else changes or disappears
    extra = os.path.join(work, 'extra.png')
    shutil.copy(os.path.join(fx, names[5]), extra)
    expect('--add file', c.index_cmd('--add', extra), items=14, added=1, removed=0)
    ids = c.verify('--add file', files() + [os.path.realpath(extra)], ids)
    # --remove a file, then a folder (everything under it), then a tar
    st = stats(run([ml, 'index', '--output', c.index, '--remove', extra]).stderr)
    expect('--remove file', st, items=13, removed=1)
    st = stats(run([ml, 'index', '--output', c.index, '--remove', os.path.join(gal, 'sub')]).stderr)
    nsub = len(os.listdir(os.path.join(gal, 'sub')))
    expect('--remove folder', st, items=13 - nsub, removed=nsub)
    st = stats(run([ml, 'index', '--output', c.index, '--remove', tar_path]).stderr)
    expect('--remove tar', st, items=10 - nsub, removed=3)
    left = [p for p in files() if '/sub/' not in p and '.tar::' not in p]
    ids = c.verify('after removals', left, ids)
    # Compaction drops the dead records, keeps every live item and id, and
    # ids are still never reused afterwards (checked by the next verify).
    shard = os.path.join(c.index, 'shard-0000.log')
    before = os.path.getsize(shard)
    r = run([ml, 'index', '--output', c.index, '--compact'])
    if os.path.getsize(shard) >= before or 'bytes freed' not in r.stderr:
        sys.exit(f"--compact did not shrink the shard ({before} -> {os.path.getsize(shard)})")
    ids = c.verify('after --compact', left, ids)
    # A sync run brings everything back (new ids for the re-added items).
    expect('sync again', c.index_cmd(*srcs), items=13, added=nsub + 3, removed=0)
    ids = c.verify('sync again', files(), ids)
    # A bad source argument is an error that names it; the index is untouched.
    r = subprocess.run([ml, 'index', '--model', model, '--output', c.index, '--images',
                        os.path.join(work, 'missing-folder')], capture_output=True, text=True)
    if r.returncode == 0 or 'missing-folder' not in r.stderr:
        sys.exit(f"missing source: rc {r.returncode}, {r.stderr}")
    c.verify('after a failed run', files(), ids)


if __name__ == '__main__':
    main()
