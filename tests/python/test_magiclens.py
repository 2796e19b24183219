"""Checks of the installed Python package magiclens (run by tests/t_python.sh).

usage: test_magiclens.py WORKDIR ML_BINARY REPO_ROOT

WORKDIR holds the fixtures t_python.sh made: img/ (make_images.py),
gallery/, a.pkl, a.mlens, c.pkl (tiny random models).  Every check
compares with an independent expectation: the CLI's output (the package
must give the same bits), the float64 PyTorch reference (parity bounds),
or values computed here.  Prints "ok  <check>" lines; the first failure
prints "FAIL <check>: why" and exits 1.
"""
import ctypes
import faulthandler
import gc
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import tracemalloc
import traceback

import numpy as np
from PIL import Image

import magiclens

W, ML, ROOT = sys.argv[1], sys.argv[2], sys.argv[3]
PY = "/usr/bin/python3"
REF = os.path.join(ROOT, "tests", "reference")
TEXTS = ["", "inside view of this building", "the same dish, but raw ingredients!",
         "caf\u00e9 vs cafe\u0301 \u65e5\u672c\u8a9e \U0001F642", "fish &amp; chips"]
LONG = " ".join(["word%d" % i for i in range(100)])  # > 75 tokens


def fail(msg):
    print("FAIL " + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        fail("%s exited %d:\n%s" % (" ".join(cmd), r.returncode, r.stderr[-2000:]))
    return r.stdout


def p(name):
    return os.path.join(W, name)


good = open(p("img/good.txt")).read().split()
bad = open(p("img/bad.txt")).read().split()
images = [p("img/" + g) for g in good]
texts = [TEXTS[i % len(TEXTS)] for i in range(len(images))]


def write_items(path, imgs, txts):
    with open(path, "w") as f:
        for i, (im, t) in enumerate(zip(imgs, txts)):
            f.write(json.dumps({"id": i, "image": im, "text": t}) + "\n")


def cli_embed(model, items, out, batch=8, extra=(), precision="fp32"):
    subprocess.run([ML, "embed", "--precision", precision, "--model", model, "--input", items,
                    "--output", out, "--batch", str(batch), "--quiet"] + list(extra),
                   capture_output=True)
    return np.load(out)


# ---- embeddings: bit-identical to the CLI, within the reference bounds ------------

def test_embed_parity():
    write_items(p("items.jsonl"), images, texts)
    for name, batch in (("a.pkl", 8), ("c.pkl", 8), ("a.pkl", 3), ("a.mlens", 8)):
        m = magiclens.Model(p(name), precision="fp32")
        got = m.embed(images, texts=texts, batch=batch)
        want = cli_embed(p(name), p("items.jsonl"), p("cli.npy"), batch)
        check(got.dtype == np.float32 and got.shape == (len(images), m.dim),
              "embed %s: shape %s" % (name, got.shape))
        check(np.array_equal(got, want), "embed %s batch %d: differs from magiclens embed "
              "(max %g)" % (name, batch, np.abs(got - want).max()))
        if name.endswith(".pkl") and batch == 8:
            np.save(p("py.npy"), got)
            ref = p(name + ".ref.npy")
            run([PY, os.path.join(REF, "ref_embed.py"), "--model", p(name), "--input",
                 p("items.jsonl"), "--output", ref, "--clip-out", p(name + ".clip.npy")])
            out = run([PY, os.path.join(REF, "compare_npy.py"), p("py.npy"), ref])
            print("    %s vs float64 reference: %s" % (name, out.strip().splitlines()[-1]))
    for prec in ("bf16", "int8", "auto"):
        got = magiclens.Model(p("a.pkl"), precision=prec).embed(images, texts=texts)
        want = cli_embed(p("a.pkl"), p("items.jsonl"), p("cli.npy"), precision=prec)
        check(np.array_equal(got, want), "embed precision=%s differs from the CLI's" % prec)
    print("ok  embed == magiclens embed bit for bit (2 models, .mlens, batch 8 and 3, fp32 / "
          "bf16 / int8 / auto), and fp32 within the parity bounds of the float64 reference")


def test_clip_towers():
    m = magiclens.Model(p("a.pkl"), precision="fp32")
    ref = np.load(p("a.pkl.clip.npy"))  # [N, 2, E]: CLIP image, CLIP text (raw)
    ref = ref / np.linalg.norm(ref, axis=2, keepdims=True)
    img = m.embed_image(images)
    txt = m.embed_text(texts)
    for got, want, what in ((img, ref[:, 0], "embed_image"), (txt, ref[:, 1], "embed_text")):
        cos = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1)
        check(cos.min() >= 0.99999 and np.abs(got - want).max() <= 1e-4,
              "%s vs reference: min cos %.7f, max diff %g" % (what, cos.min(),
                                                             np.abs(got - want).max()))
    print("ok  embed_image / embed_text within the bounds of the reference's CLIP towers")


def test_tokenize():
    m = magiclens.Model(p("a.pkl"))
    ids = m.tokenize(TEXTS + [LONG], truncate=True)
    want = [json.loads(line) for line in
            run([ML, "tokenize", "--truncate"] + TEXTS + [LONG]).splitlines()]
    check(ids.dtype == np.int32 and ids.shape == (len(TEXTS) + 1, 77), "tokenize shape")
    check(np.array_equal(ids, np.array(want, dtype=np.int32)), "tokenize != magiclens tokenize")
    check(np.array_equal(m.tokenize("a photo")[0], ids[0] * 0 + m.tokenize(["a photo"])[0]),
          "tokenize(str)")
    try:
        m.tokenize(["ok", LONG])
        fail("tokenize: an over-long text did not raise")
    except magiclens.Error as e:
        check("item 1" in str(e), "tokenize error does not name the item: %s" % e)
    print("ok  tokenize == magiclens tokenize; over-long text raises unless truncate=True")


# ---- every image input kind -----------------------------------------------------

def test_input_kinds():
    m = magiclens.Model(p("a.pkl"), precision="fp32")
    png = next(g for g in good if g.endswith(".png") and "rgb" in g.lower() and "16" not in g)
    path = p("img/" + png)
    data = open(path, "rb").read()
    pil = Image.open(path)
    arr = np.asarray(Image.open(path).convert("RGB"))
    strided = np.ascontiguousarray(arr[:, ::-1])[:, ::-1]  # same pixels, negative strides
    kinds = {"str": path, "PathLike": pathlib.Path(path), "bytes": data,
             "bytearray": bytearray(data), "memoryview": memoryview(data), "PIL": pil,
             "array": arr, "strided array": strided}
    rows = m.embed(list(kinds.values()), texts="a red one")
    for i, k in enumerate(kinds):
        check(np.array_equal(rows[i], rows[0]), "%s input differs from the path's (%s)" % (k, png))
    one = m.embed(path, texts="a red one")
    check(one.shape == (1, m.dim) and np.array_equal(one[0], rows[0]), "a single image argument")
    # Every fixture as bytes == as path (JPEG, PNG, WebP, GIF decoders).
    as_bytes = m.embed([open(i, "rb").read() for i in images], texts=texts)
    check(np.array_equal(as_bytes, m.embed(images, texts=texts)), "bytes != paths on the fixtures")
    # texts: None == "" == [None, ...]; one string == the list of it.
    e0 = m.embed(images[:3])
    check(np.array_equal(e0, m.embed(images[:3], texts="")) and
          np.array_equal(e0, m.embed(images[:3], texts=[None, "", None])), "empty instruction")
    try:
        m.embed([path, 42])
        fail("a non-image did not raise")
    except TypeError as e:
        check("item 1" in str(e), "TypeError does not name the item: %s" % e)
    try:
        m.embed([np.zeros((4, 4), np.uint8)])
        fail("a 2-D array did not raise")
    except TypeError:
        pass
    print("ok  PNG as str, PathLike, bytes, bytearray, memoryview, PIL, array, strided array: "
          "identical; every fixture as bytes == as path")


# ---- errors ------------------------------------------------------------------------

def test_errors():
    m = magiclens.Model(p("a.pkl"), precision="fp32")
    broken = p("img/" + next(b for b in bad if b.endswith(".png")))
    cases = [([images[0], broken], None, ["item 1", broken, "PNG"]),
             ([b"not an image at all"], None, ["item 0 (bytes, 19 bytes)", "unknown image format"]),
             ([images[0], p("img/missing.jpg")], None, ["item 1", "missing.jpg"]),
             ([images[0], images[1]], ["ok", LONG], ["item 1", "over the context", "truncate=True"])]
    for imgs, txts, words in cases:
        try:
            m.embed(imgs, texts=txts)
            fail("embed %s did not raise" % words)
        except magiclens.Error as e:
            for w in words:
                check(w.lower() in str(e).lower(), "error lacks %r: %s" % (w, e))
    check(np.all(np.isfinite(m.embed([images[0]], texts=LONG, truncate=True))), "truncate=True")
    # on_error="nan": NaN rows and last_errors; the other rows are the CLI's.
    mixed = images[:5] + [broken] + images[5:9] + [p("img/missing.jpg")]
    mt = texts[:5] + [""] + texts[5:7] + [LONG] + texts[8:9] + [""]
    got = m.embed(mixed, texts=mt, on_error="nan")
    failed = sorted(i for i, _ in m.last_errors)
    check(failed == [5, 8, 10], "last_errors lists %s, want [5, 8, 10]" % failed)
    check(all(np.isnan(got[i]).all() for i in failed), "failed rows are not NaN")
    write_items(p("mixed.jsonl"), mixed, mt)
    want = cli_embed(p("a.pkl"), p("mixed.jsonl"), p("mixed.npy"))
    check(np.array_equal(got, want, equal_nan=True), "on_error=nan rows != magiclens embed's")
    check(m.embed(images[:1]) is not None and m.last_errors == [], "last_errors reset")
    # A damaged index, and a folder that is no index.
    d = p("damaged.mlindex")
    shutil.rmtree(d, ignore_errors=True)
    magiclens.Index.build(d, model=m, sources=[p("gallery")]).close()
    shard = os.path.join(d, "shard-0000.log")
    b = bytearray(open(shard, "rb").read())
    b[len(b) // 2] ^= 0x10
    open(shard, "wb").write(b)
    for path, words in ((d, ["shard-0000.log"]), (p("img"), ["index.json"])):
        try:
            magiclens.Index(path)
            fail("Index(%s) did not raise" % path)
        except magiclens.Error as e:
            check(all(w in str(e) for w in words), "damaged index error lacks %s: %s" % (words, e))
    try:
        magiclens.Model(p("img/bad_text.txt"))
        fail("a non-model did not raise")
    except magiclens.Error as e:
        check("bad_text.txt" in str(e), "model error does not name the file: %s" % e)
    print("ok  errors name the item and reason (unreadable image, bytes, missing file, over-long "
          "instruction, damaged index, bad model); on_error='nan' == CLI rows + last_errors")


# ---- index: build, search == magiclens search --json, updates --------------------------

def cli_search(index, args):
    out = run([ML, "search", "--index", index, "--model", p("a.pkl"), "--precision", "fp32",
               "--json"] + args)
    return [(r["id"], r["score"], r["path"]) for r in json.loads(out)["results"]]


def test_index_search():
    m = magiclens.Model(p("a.pkl"), precision="fp32")
    cli_ix, py_ix = p("cli.mlindex"), p("py.mlindex")
    for d in (cli_ix, py_ix):
        shutil.rmtree(d, ignore_errors=True)
    run([ML, "index", "--model", p("a.pkl"), "--precision", "fp32", "--images", p("gallery"),
         "--output", cli_ix, "--quiet"])
    ix = magiclens.Index.build(py_ix, model=m, sources=[p("gallery")])
    cix = magiclens.Index(cli_ix)
    check(len(ix) == len(cix) == len(good), "index sizes %d %d, want %d" % (len(ix), len(cix),
                                                                          len(good)))
    ids_a, emb_a = ix.embeddings()
    ids_b, emb_b = cix.embeddings()
    check(ids_a.dtype == np.int64 and emb_a.dtype == np.float32 and emb_a.shape == (len(good), m.dim),
          "embeddings() types")
    check(np.array_equal(ids_a, ids_b) and np.array_equal(emb_a, emb_b),
          "Index.build embeddings != magiclens index's")
    run([ML, "export", "--index", cli_ix, "--output", p("export"), "--quiet"])
    check(np.array_equal(np.load(p("export/embeddings.npy")), emb_b), "embeddings() != export")
    q = p("gallery/" + sorted(os.listdir(p("gallery")))[1])
    prefix = p("gallery/sub")
    queries = [
        (dict(image=q, text="the same chair in a living room", k=10), ["--image", q, "--text", "the same chair in a living room", "-k", "10"]),
        (dict(image=q, k=5, offset=2), ["--image", q, "-k", "5", "--offset", "2"]),
        (dict(text="a photo of a dog", k=8), ["--text", "a photo of a dog", "-k", "8"]),
        (dict(like=int(ids_b[3]), text="make it red"), ["--like", str(ids_b[3]), "--text", "make it red"]),
        (dict(image=q, text="at night", k=20, min_score=0.0), ["--image", q, "--text", "at night", "-k", "20", "--min-score", "0"]),
        (dict(image=q, text="in the snow", prefix=prefix), ["--image", q, "--text", "in the snow", "--prefix", prefix]),
    ]
    for index, handle in ((cli_ix, cix), (cli_ix, ix)):
        for kw, args in queries:
            got = [tuple(h) for h in handle.search(model=m, **kw)]
            want = cli_search(index, args)
            check(len(want) > 0 and got == want, "search %s: %s != CLI %s" % (kw, got[:3], want[:3]))
    hits = cix.search(model=m, image=open(q, "rb").read(), text="at night", k=3)
    check([tuple(h) for h in hits] == cli_search(cli_ix, ["--image", q, "--text", "at night", "-k", "3"]),
          "search with an image given as bytes")
    check(isinstance(hits[0], magiclens.Hit) and hits[0].path.startswith(p("gallery")), "Hit")
    # The text-only score is the CLIP text . CLIP image dot product.
    t = m.embed_text("a photo of a dog")[0]
    clip = np.load(p("export/clip_embeddings.npy"))
    best = cix.search(model=m, text="a photo of a dog", k=1)[0]
    row = int(np.nonzero(ids_b == best.id)[0][0])
    check(abs(float(clip[row] @ t) - best.score) < 1e-5, "text search score != CLIP dot product")
    # Updates on the handle: remove, add back, sync.
    victim = os.path.join(prefix, sorted(os.listdir(prefix))[0])
    st = ix.remove(paths=[victim])
    check(st["removed"] == 1 and len(ix) == len(good) - 1, "remove: %s, %d items" % (st, len(ix)))
    check(all(h.path != victim for h in ix.search(model=m, image=victim, k=len(good))),
          "a removed item is still found")
    st = ix.add(model=m, paths=[victim])
    check(st["added"] == 1 and len(ix) == len(good), "add: %s" % st)
    st = ix.sync(model=m, sources=[p("gallery")])
    check(st["unchanged"] + st["touched"] == len(good) and st["added"] == 0, "sync: %s" % st)
    ix.close()
    cix.close()
    print("ok  Index.build == magiclens index (embeddings, export); %d queries == magiclens "
          "search --json on both indexes; remove / add / sync" % (2 * len(queries) + 1))


# ---- threads and the GIL --------------------------------------------------------------

def test_concurrency():
    m = magiclens.Model(p("a.pkl"), precision="fp32")
    serial = [m.embed(images, texts=texts), m.embed(images[::-1], texts="at night"),
              m.embed_text(texts), m.embed_image(images[:9])]
    ix = magiclens.Index(p("cli.mlindex"))
    serial_hits = ix.search(model=m, image=images[0], text="red", k=7)
    results, errors = {}, []

    def work(t):
        try:
            for _ in range(3):
                r = ([m.embed(images, texts=texts), m.embed(images[::-1], texts="at night"),
                      m.embed_text(texts), m.embed_image(images[:9])] if t % 2 == 0 else None)
                h = ix.search(model=m, image=images[0], text="red", k=7)
                if r is None:
                    r = [m.embed(images, texts=texts), m.embed(images[::-1], texts="at night"),
                         m.embed_text(texts), m.embed_image(images[:9])]
                results.setdefault(t, []).append((r, h))
        except Exception:  # reported below
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    check(not errors, "thread failed:\n" + "".join(errors))
    for t, runs in results.items():
        for r, h in runs:
            check(all(np.array_equal(a, b) for a, b in zip(r, serial)) and h == serial_hits,
                  "thread %d: results differ from the serial ones" % t)

    # The GIL is free while the library works: a thread blocked inside
    # embed (opening a FIFO, before any pixel is read) lets this thread run
    # Python code; were the GIL held there, the loop below could never run
    # and the watchdog (t_python.sh's timeout) would end the test.
    fifo = p("gil.fifo")
    if os.path.exists(fifo):
        os.remove(fifo)
    os.mkfifo(fifo)
    box = {}

    def blocked():
        box["tid"] = threading.get_native_id()
        box["out"] = m.embed([fifo, images[0]], on_error="nan")
        box["errors"] = m.last_errors

    th = threading.Thread(target=blocked)
    th.start()
    while "tid" not in box:
        pass
    spins = 0
    while open("/proc/self/task/%d/syscall" % box["tid"]).read().split()[0] != "257":
        spins += 1  # Python runs here while the other thread is in the C library
    open(fifo, "wb").close()  # let it go
    th.join()
    check(box["errors"] and box["errors"][0][0] == 0 and "regular file" in box["errors"][0][1],
          "FIFO item: %s" % box.get("errors"))
    print("ok  3 threads x 3 rounds on one Model and one Index == serial results; Python runs "
          "while a thread is inside embed (GIL released)")


# ---- Ctrl-C ----------------------------------------------------------------------------

CHILD_EMBED = r"""
import sys, traceback, magiclens
m = magiclens.Model(sys.argv[1], precision="fp32")
items = [sys.argv[2]] + sys.argv[3:] * 40
try:
    m.embed(items, batch=1, on_error="nan")
    print("finished")
except KeyboardInterrupt as e:
    frames = [f.name for f in traceback.extract_tb(e.__traceback__)]
    print("interrupted in", frames[-1])
"""

CHILD_BUILD = r"""
import sys, magiclens
m = magiclens.Model(sys.argv[1], precision="fp32")
def progress(done, total):
    print("progress", done, total, flush=True)
try:
    magiclens.Index.build(sys.argv[2], model=m, sources=[sys.argv[3]], batch=1, progress=progress)
    print("finished")
except KeyboardInterrupt:
    print("interrupted")
"""


def test_ctrl_c():
    # embed: the child is inside embed (blocked opening a FIFO, item 0) when
    # SIGINT comes; embed stops after that batch with KeyboardInterrupt.
    fifo = p("sigint.fifo")
    if os.path.exists(fifo):
        os.remove(fifo)
    os.mkfifo(fifo)
    child = subprocess.Popen([sys.executable, "-c", CHILD_EMBED, p("a.pkl"), fifo] + images,
                             stdout=subprocess.PIPE, text=True)
    with open(fifo, "wb"):  # returns once the child has opened it: it is inside embed
        child.send_signal(signal.SIGINT)
    out = child.communicate()[0].strip()
    check(out == "interrupted in embed", "embed + SIGINT: child printed %r" % out)

    # build: a gallery of many copies; SIGINT after the first committed batch.
    big = p("big")
    shutil.rmtree(big, ignore_errors=True)
    os.makedirs(big)
    for r in range(8):
        for g in good:
            shutil.copy(p("img/" + g), os.path.join(big, "%d_%s" % (r, g)))
    total = 8 * len(good)
    d = p("ctrlc.mlindex")
    shutil.rmtree(d, ignore_errors=True)
    child = subprocess.Popen([sys.executable, "-c", CHILD_BUILD, p("a.pkl"), d, big],
                             stdout=subprocess.PIPE, text=True)
    first = child.stdout.readline()
    check(first.startswith("progress"), "build child printed %r" % first)
    child.send_signal(signal.SIGINT)
    rest = child.communicate()[0].strip().splitlines()
    check(rest and rest[-1] == "interrupted", "build + SIGINT: child ended with %r" % rest[-1:])
    m = magiclens.Model(p("a.pkl"), precision="fp32")
    ix = magiclens.Index(d)  # opens: not corrupted
    partial = len(ix)
    check(0 < partial < total, "interrupted index holds %d of %d items" % (partial, total))
    st = ix.sync(model=m, sources=[big], batch=1)
    check(len(ix) == total and st["added"] == total - partial,
          "re-sync: %d items, %s" % (len(ix), st))
    # The finished index holds what an uninterrupted build gives.
    full = magiclens.Index.build(p("full.mlindex"), model=m, sources=[big], batch=1)
    a, b = ix.embeddings()[1], full.embeddings()[1]
    a, b = a[np.lexsort(a.T[::-1])], b[np.lexsort(b.T[::-1])]
    check(np.array_equal(a, b), "resumed index != uninterrupted build")
    print("ok  Ctrl-C: embed stops with KeyboardInterrupt; an interrupted build (%d of %d) opens, "
          "re-sync completes it == uninterrupted build" % (partial, total))


# ---- leaks ---------------------------------------------------------------------------

def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]


def heap_in_use():
    """Bytes malloc has handed out and not got back (every arena, and the
    mmap'd blocks): exact, unlike RSS, which moves with the allocator's caches."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _Mallinfo2
    mi = libc.mallinfo2()
    return mi.uordblks + mi.hblkhd


def test_leaks():
    m = magiclens.Model(p("a.pkl"), precision="fp32")
    data = open(images[0], "rb").read()
    arr = np.asarray(Image.open(images[0]).convert("RGB"))
    ix = magiclens.Index(p("cli.mlindex"))

    kinds = [images[1], data, arr]
    txts = ["red", LONG, None]

    def one_round(i):
        m.embed([kinds[i % 3]], texts=txts[i % 3], on_error="nan")
        try:
            m.embed([b"junk"])
        except magiclens.Error:
            pass
        if i % 10 == 0:
            ix.search(model=m, image=arr, text="red", k=5)

    for i in range(300):  # warm up: allocator pools, thread arenas, caches
        one_round(i)
    # RSS must stay flat; malloc's own count of the bytes in use catches a C
    # leak exactly (an error message is ~1 KiB a round), tracemalloc a Python
    # object never released (a missed reference: ~100 bytes a round).
    gc.collect()
    tracemalloc.start()
    before, heap_before = rss_kb(), heap_in_use()
    py_before = tracemalloc.get_traced_memory()[0]
    for i in range(1000):
        one_round(i)
    gc.collect()
    py_grown = tracemalloc.get_traced_memory()[0] - py_before
    tracemalloc.stop()
    grown, heap_grown = rss_kb() - before, heap_in_use() - heap_before
    check(heap_grown < 65536, "malloc'd bytes in use grew by %d over 1000 rounds" % heap_grown)
    check(py_grown < 16384, "Python objects grew by %d bytes over 1000 rounds" % py_grown)
    check(grown < 2048, "RSS grew by %d KiB over 1000 rounds" % grown)
    print("ok  1000 rounds of embed (3 input kinds, over-long text, a failing item) + 100 "
          "searches: RSS %+d KiB, heap in use %+d bytes, Python objects %+d bytes"
          % (grown, heap_grown, py_grown))


# ---- vocabulary lookup -------------------------------------------------------------------

def test_vocab():
    v = os.environ.get("MAGICLENS_VOCAB")
    check(v and magiclens.find_vocab() == v, "find_vocab() != $MAGICLENS_VOCAB")
    env = dict(os.environ)
    env.pop("MAGICLENS_VOCAB")
    # Without the variable, from an empty folder: a .mlens model uses its own
    # copy; for a .pkl the next step is the source tree's models/, then
    # ../shared/assets/ beside it (computed here from the tree's layout).
    expect = None
    for d in (os.path.join(ROOT, "models"), os.path.join(ROOT, "..", "shared", "assets")):
        if expect is None and os.path.isfile(os.path.join(d, magiclens.VOCAB_FILE)):
            expect = os.path.realpath(os.path.join(d, magiclens.VOCAB_FILE))
    empty = p("empty")
    os.makedirs(empty, exist_ok=True)
    code = ("import os, magiclens; m = magiclens.Model(%r); f = magiclens.find_vocab(); "
            "print(m.info['has_vocab'], f and os.path.realpath(f))")
    out = run([sys.executable, "-c", code % p("a.mlens")], env=env, cwd=empty).split()
    check(out[0] == "True", "a.mlens without $MAGICLENS_VOCAB: no vocabulary (%s)" % out)
    out = run([sys.executable, "-c", code % p("a.pkl")], env=env, cwd=empty).split()
    check(out == [str(expect is not None), str(expect)],
          "a.pkl without $MAGICLENS_VOCAB: %s, want %s" % (out, [expect is not None, expect]))
    print("ok  vocabulary: $MAGICLENS_VOCAB, the .mlens copy, then the source tree (%s)" % expect)


# A hang (e.g. the GIL held while blocked) prints every thread's stack and fails.
faulthandler.dump_traceback_later(480, exit=True)
for test in (test_embed_parity, test_clip_towers, test_tokenize, test_input_kinds, test_errors,
             test_index_search, test_concurrency, test_ctrl_c, test_leaks, test_vocab):
    test()
print("python: all checks passed")
