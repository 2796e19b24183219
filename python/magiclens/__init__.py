"""magiclens - MagicLens embeddings and image search in Python.

A thin layer over the C engine (libmagiclens, through the compiled module
magiclens._core): the same numbers as the `magiclens` command-line tool,
numpy arrays in and out, the GIL released during all compute.

    import magiclens
    m = magiclens.Model("magic_lens_clip_base.pkl")
    q = m.embed(["cat.jpg"], texts="the same cat, but sleeping")   # float32 [1, 512]
    ix = magiclens.Index.build("photos.mlindex", model=m, sources=["photos/"])
    for hit in ix.search(model=m, image="cat.jpg", text="sleeping", k=5):
        print(hit.score, hit.path)

See docs/python.md for the whole API.
"""
import os
import threading
from collections import namedtuple

import numpy as np

from . import _core
from ._core import Error

__all__ = ["Model", "Index", "Hit", "Error", "find_vocab", "set_threads"]
__version__ = _core.VERSION

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"

# Index update modes (include/magiclens_index.h).
_SYNC, _ADD, _REMOVE = 0, 1, 2

Hit = namedtuple("Hit", ["id", "score", "path"])
Hit.__doc__ = """One search result: item id, score (dot product of the L2-normalised
query and item embeddings) and the item's path; best first."""


def set_threads(n):
    """Compute threads for every model in this process (0 = every CPU the
    process may use, the default; $MAGICLENS_THREADS is read otherwise)."""
    _core.set_threads(int(n))


def find_vocab(vocab=None):
    """The CLIP vocabulary file the package would use, or None.

    Order: `vocab` when given; $MAGICLENS_VOCAB; models/ of the source tree
    this package was built from, and ../shared/assets/ beside it; then the
    library's own lookup (beside the running program, then models/ and
    ../shared/assets/ of the current folder).  A .mlens model's own copy
    comes right after $MAGICLENS_VOCAB (Model handles that)."""
    if vocab is not None:
        return os.fspath(vocab)
    env = os.environ.get("MAGICLENS_VOCAB")
    if env:
        return env
    root = _core.SOURCE_ROOT
    if root:
        for d in (os.path.join(root, "models"), os.path.join(root, "..", "shared", "assets")):
            p = os.path.join(d, VOCAB_FILE)
            if os.path.isfile(p):
                return os.path.normpath(p)
    return _core.vocab_find()


# ---- image and text arguments ------------------------------------------------

def _is_pil(x):
    return type(x).__module__.startswith("PIL.") and hasattr(x, "convert")


def _image_arg(x, i):
    """One image as _core takes it: a str path, encoded bytes, or a
    C-contiguous uint8 HxWx3 array."""
    if isinstance(x, str):
        return x
    if isinstance(x, os.PathLike):
        return os.fsdecode(os.fspath(x))
    if isinstance(x, (bytes, bytearray, memoryview)):
        return x
    if _is_pil(x):
        return np.ascontiguousarray(np.asarray(x.convert("RGB"), dtype=np.uint8))
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
            raise TypeError("item %d: an image array must be HxWx3 uint8 (RGB), not %s %s"
                            % (i, x.dtype, "x".join(map(str, x.shape))))
        return np.ascontiguousarray(x)
    raise TypeError("item %d: %s is not an image (give a path, encoded bytes, a PIL image or an "
                    "HxWx3 uint8 array)" % (i, type(x).__name__))


def _image_list(images):
    """A list of image arguments from one image or a sequence of them."""
    single = (isinstance(images, (str, bytes, bytearray, memoryview, os.PathLike))
              or _is_pil(images) or (isinstance(images, np.ndarray) and images.ndim == 3))
    seq = [images] if single else list(images)
    return [_image_arg(x, i) for i, x in enumerate(seq)]


def _text_list(texts, n, what="texts"):
    """None, one str for every item, or one str (or None) per item."""
    if texts is None:
        return None
    if isinstance(texts, str):
        return [texts] * n
    out = list(texts)
    if len(out) != n:
        raise ValueError("%s: %d given for %d images" % (what, len(out), n))
    for i, t in enumerate(out):
        if t is not None and not isinstance(t, str):
            raise TypeError("%s: item %d is %s, not str" % (what, i, type(t).__name__))
    return out


def _strings(texts):
    if isinstance(texts, str):
        return [texts]
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError("texts: item %d is %s, not str" % (i, type(t).__name__))
    return out


def _on_error_nan(on_error):
    if on_error not in ("raise", "nan"):
        raise ValueError('on_error must be "raise" or "nan"')
    return on_error == "nan"


def _paths(sources, what):
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    out = [os.fsdecode(os.fspath(s)) for s in sources]
    if not out:
        raise ValueError("%s: give at least one path" % what)
    return out


# ---- Model ----------------------------------------------------------------------

class Model:
    """A MagicLens model: an official checkpoint (.pkl) or a .mlens file.

    Model(path, vocab=None, precision="auto", threads=None)

    vocab: the CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz); None
    means the lookup of find_vocab() (with a .mlens file's own copy right
    after $MAGICLENS_VOCAB).  Without any vocabulary the model still loads
    for image-only work (the empty instruction).
    precision: "auto" (fastest within the accuracy bounds on this CPU),
    "fp32", "bf16" or "int8" - as the CLI's --precision.
    threads: compute threads; process-wide, like set_threads().

    One Model may be used by several Python threads at once; the GIL is
    released during all compute and the results equal serial ones.
    """

    def __init__(self, path, vocab=None, precision="auto", threads=None):
        if threads is not None:
            set_threads(threads)
        self.path = os.fsdecode(os.fspath(path))
        vocab_path = os.fsdecode(os.fspath(vocab)) if vocab is not None else None
        native = _core.is_native(self.path) if os.path.exists(self.path) else False
        if vocab_path is None and not os.environ.get("MAGICLENS_VOCAB") and not native:
            vocab_path = find_vocab()
        m = _core.Model(self.path, vocab_path, precision)
        if vocab is None and native and not m.info()["has_vocab"]:
            # a .mlens file without its own copy: the rest of the lookup
            found = find_vocab()
            if found:
                m = _core.Model(self.path, found, precision)
        self._m = m
        self._local = threading.local()

    @property
    def dim(self):
        """Embedding size (the CLIP embedding width = fusion width)."""
        return self._m.dim

    @property
    def info(self):
        """Sizes of the network, precision, instruction set (isa), threads,
        whether a vocabulary is loaded, and the weights' fingerprint."""
        return self._m.info()

    @property
    def last_errors(self):
        """(index, reason) of the items that failed in this thread's last
        call with on_error="nan"."""
        return getattr(self._local, "errors", [])

    def _done(self, errors):
        self._local.errors = errors

    def embed(self, images, texts=None, batch=8, truncate=False, on_error="raise"):
        """MagicLens embeddings of images with instructions, exactly as
        `magiclens embed --batch <batch>`: float32 [N, dim], L2-normalised.

        images: one image or a sequence: paths (str, os.PathLike), bytes of
        an encoded file (JPEG, PNG, WebP, GIF), PIL images, HxWx3 uint8
        arrays.  texts: None (the empty instruction: gallery embeddings),
        one str for every image, or one per image.  truncate: cut over-long
        instructions instead of failing.  on_error: "raise" raises
        magiclens.Error naming the first failed item and the reason;
        "nan" gives NaN rows and lists the failures in last_errors.
        """
        nan = _on_error_nan(on_error)
        items = _image_list(images)
        tl = _text_list(texts, len(items))
        out = np.empty((len(items), self.dim), dtype=np.float32)
        self._done([])
        self._done(self._m.embed(items, tl, bool(truncate), int(batch), out, nan))
        return out

    def embed_image(self, images, batch=8, on_error="raise"):
        """CLIP image-tower embeddings: float32 [N, dim], L2-normalised (what
        an index stores as its CLIP embeddings)."""
        nan = _on_error_nan(on_error)
        items = _image_list(images)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        self._done([])
        self._done(self._m.embed_image(items, None, False, int(batch), out, nan))
        return out

    def embed_text(self, texts, truncate=False, on_error="raise"):
        """CLIP text-tower embeddings (text-only queries): float32 [N, dim],
        L2-normalised."""
        nan = _on_error_nan(on_error)
        tl = _strings(texts)
        out = np.empty((len(tl), self.dim), dtype=np.float32)
        self._done([])
        self._done(self._m.embed_text(tl, bool(truncate), out, nan))
        return out

    def tokenize(self, texts, truncate=False):
        """CLIP token ids: int32 [N, 77] (SOT, BPE tokens, EOT, zeros).  An
        over-long text raises magiclens.Error unless truncate=True."""
        tl = _strings(texts)
        out = np.zeros((len(tl), self._m.context_length), dtype=np.int32)
        self._m.tokenize(tl, bool(truncate), out)
        return out

    def __repr__(self):
        i = self.info
        return "<magiclens.Model %r dim=%d precision=%s isa=%s>" % (
            self.path, i["embed_dim"], i["precision"], i["isa"])


# ---- Index ------------------------------------------------------------------------

class Index:
    """An image index folder (.mlindex), as `magiclens index` builds it.

    Index(path, store=None, exact=False) opens an existing index; store:
    vectors in memory ("f32", "f16", "int8"; None = auto), exact: never the
    approximate structure - as `magiclens search --store/--exact`.
    Index.build() creates or updates one.  Searches may run from several
    threads at once; sync/add/remove wait for them (and they for it).
    """

    def __init__(self, path, store=None, exact=False):
        self.path = os.fsdecode(os.fspath(path))
        self._ix = _core.Index(self.path, store, bool(exact))

    @classmethod
    def build(cls, path, model, sources, batch=8, progress=None):
        """Builds the index folder `path` from `sources` (image files,
        folders, WebDataset .tar files, text files listing paths), or brings
        it up to date: `magiclens index --images`.  Returns the opened Index.

        progress: called as progress(done, total) after each committed
        batch; an exception there (or Ctrl-C) stops the build cleanly: what
        was committed stays, and the next build/sync redoes the rest."""
        _core.update(os.fsdecode(os.fspath(path)), _SYNC, model._m, _paths(sources, "sources"),
                     int(batch), progress, model.path)
        return cls(path)

    def sync(self, model, sources, batch=8, progress=None):
        """Makes the index mirror `sources` (new and changed files embedded,
        vanished ones dropped); returns the update's statistics (dict)."""
        return self._ix.update(self.path, _SYNC, model._m, _paths(sources, "sources"),
                               int(batch), progress, model.path)

    def add(self, model, paths, batch=8, progress=None):
        """Adds (or refreshes) image files, folders or tars; drops nothing."""
        return self._ix.update(self.path, _ADD, model._m, _paths(paths, "paths"), int(batch),
                               progress, model.path)

    def remove(self, paths):
        """Drops files, folders (everything under them) or tars."""
        return self._ix.update(self.path, _REMOVE, None, _paths(paths, "paths"), 8, None, None)

    def __len__(self):
        return self._ix.count()

    @property
    def dim(self):
        """Embedding width."""
        return self._ix.info()["dim"]

    @property
    def info(self):
        """count, dim, the model's file name and fingerprint."""
        return self._ix.info()

    def search(self, model, image=None, text=None, like=None, k=10, offset=0, min_score=None,
               prefix=None, truncate=False, nprobe=0):
        """Searches like `magiclens search`: same hits, order and scores.

        image (+ text): a MagicLens query, the image with an instruction;
        like=id (+ text): an indexed item stands for the image; text alone:
        CLIP text-to-image.  Returns a list of Hit(id, score, path), best
        first: results offset .. offset+k-1, those below min_score dropped,
        only paths starting with prefix."""
        if image is None and text is None and like is None:
            raise ValueError("give image, text and/or like")
        if image is not None and like is not None:
            raise ValueError("image and like cannot be combined")
        img = _image_arg(image, 0) if image is not None else None
        hits = self._ix.search(model._m, img, text, -1 if like is None else int(like), int(k),
                               int(offset), min_score, prefix, bool(truncate), int(nprobe))
        return [Hit(*h) for h in hits]

    def embeddings(self):
        """(ids int64 [N], embeddings float32 [N, dim]) of every item, in id
        order: the gallery embeddings.  One copy (the shard logs interleave
        records, so no contiguous matrix exists to share)."""
        n, d = len(self), self.dim
        ids = np.empty(n, dtype=np.int64)
        emb = np.empty((n, d), dtype=np.float32)
        self._ix.embeddings(ids, emb)
        return ids, emb

    def close(self):
        """Releases the index (also done when the object is collected)."""
        self._ix.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<magiclens.Index %r items=%d>" % (self.path, len(self))
