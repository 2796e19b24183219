#!/usr/bin/env python3
"""Writes the image fixture set used by tests/unit/test_image.c and the
end-to-end embedding tests.

usage: make_images.py OUTDIR [--no-expected]

Good images (listed in OUTDIR/good.txt) cover every decoder path: JPEG
baseline/progressive/4:4:4/4:2:0/gray/CMYK, PNG in every colour type, bit
depth and interlacing, WebP lossy/lossless/alpha, GIF.  Broken files are
listed in OUTDIR/bad.txt.  Unless --no-expected, each good image NAME also
gets NAME.rgb.npy (PIL's Image.open().convert("RGB"), uint8 HxWx3) and
NAME.pre.npy / NAME.pre64.npy: the MagicLens preprocessing (float64, HWC)
computed here independently of the C code from the formula of
jax.image.resize(method="bilinear", antialias=True).
Content is deterministic (seeded noise + gradients + shapes).
"""
import io
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image, ImageDraw

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


# ---------------------------------------------------------------- content
def pattern(w, h, seed, lo=0, hi=255):
    """RGB uint8 test picture: gradients, a few shapes, seeded noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 127.5 + 127.5 * np.sin(x / 7.0 + y / 11.0)
    img = np.stack([r, g, b], -1)
    img += rng.normal(0, 18, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(pil)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(1, w // 2 + 2)), y0 + int(rng.integers(1, h // 2 + 2))
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.integers(2):
            d.ellipse([x0, y0, x1, y1], fill=col)
        else:
            d.rectangle([x0, y0, x1, y1], fill=col)
    a = np.asarray(pil).astype(np.float64)
    return np.round(lo + a * (hi - lo) / 255.0).astype(np.uint8)


def gray(w, h, seed):
    return pattern(w, h, seed)[..., 1]


def alpha(w, h):
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 255 // max(w - 1, 1)) ^ (y * 3)).astype(np.uint8)


# ---------------------------------------------------------------- raw PNG
def _chunk(tag, data):
    c = tag + data
    return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)


def _pack_rows(px, depth, channels):
    """px: HxWxC uint array -> list of packed scanlines (no filter byte)."""
    h, w = px.shape[:2]
    px = px.reshape(h, w * channels)
    if depth == 16:
        return [row.astype(">u2").tobytes() for row in px]
    if depth == 8:
        return [row.astype(np.uint8).tobytes() for row in px]
    per = 8 // depth
    rows = []
    for row in px:
        out = bytearray((len(row) + per - 1) // per)
        for i, v in enumerate(row):
            out[i // per] |= int(v) << (8 - depth * (i % per + 1))
        rows.append(bytes(out))
    return rows


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(path, px, depth, ctype, palette=None, trns=None, interlace=False, ihdr_wh=None):
    """Minimal PNG writer (PIL cannot write 16-bit RGB(A), low bit depths or
    interlaced files).  px: HxW or HxWxC array of sample values."""
    if px.ndim == 2:
        px = px[..., None]
    h, w, c = px.shape
    raw = bytearray()
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        sub = px[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        for row in _pack_rows(sub, depth, c):
            raw += b"\x00" + row
    iw, ih = ihdr_wh or (w, h)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", iw, ih, depth, ctype, 0, 0, int(interlace)))
    if palette is not None:
        out += _chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).ravel()))
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    out += _chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + _chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(out)


def gif_descriptor_offset(gif):
    """Byte offset of the first image descriptor (0x2C) of a GIF."""
    pos = 13
    if gif[10] & 0x80:
        pos += 3 << ((gif[10] & 7) + 1)
    while gif[pos] == 0x21:  # extension: introducer, label, sub-blocks
        pos += 2
        while gif[pos]:
            pos += gif[pos] + 1
        pos += 1
    assert gif[pos] == 0x2C
    return pos


def gif_reframe(gif, screen_wh, left_top):
    """Enlarges the logical screen and moves the first frame inside it."""
    i = gif_descriptor_offset(gif)
    g = bytearray(gif)
    g[6:10] = struct.pack("<HH", *screen_wh)
    g[i + 1:i + 5] = struct.pack("<HH", *left_top)
    return bytes(g)


def bomb_png(path, w, h):
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    out += _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(out)


# ---------------------------------------------------------------- fixtures
def good_images(d):
    """Writes the good fixtures; returns their file names."""
    names = []

    def save(name, im, **kw):
        im.save(os.path.join(d, name), **kw)
        names.append(name)

    def raw_png(name, *a, **kw):
        write_png(os.path.join(d, name), *a, **kw)
        names.append(name)

    rgb = Image.fromarray(pattern(300, 200, 1))
    save("jpeg_baseline.jpg", rgb, quality=90)
    save("jpeg_progressive.jpg", Image.fromarray(pattern(257, 193, 2)), quality=85, progressive=True)
    save("jpeg_444.jpg", Image.fromarray(pattern(233, 241, 3)), quality=95, subsampling=0)
    save("jpeg_420.jpg", Image.fromarray(pattern(241, 233, 4)), quality=75, subsampling=2)
    save("jpeg_422.jpg", Image.fromarray(pattern(199, 101, 5)), quality=80, subsampling=1)
    save("jpeg_gray.jpg", Image.fromarray(gray(211, 150, 6), "L"), quality=90)
    cmyk = np.concatenate([pattern(180, 130, 7), alpha(180, 130)[..., None] // 2], -1)
    save("jpeg_cmyk.jpg", Image.fromarray(cmyk, "CMYK"), quality=90)
    save("jpeg_wide.jpg", Image.fromarray(pattern(2000, 60, 8)), quality=90)
    save("jpeg_big.jpg", Image.fromarray(pattern(1600, 1200, 9)), quality=88)
    # PIL accepts a JPEG whose EOI marker is missing (all scanlines present)
    # and one followed by junk.
    buf = io.BytesIO()
    Image.fromarray(pattern(120, 90, 36)).save(buf, "JPEG", quality=90)
    for name, data in (("jpeg_no_eoi.jpg", buf.getvalue()[:-2]),
                       ("jpeg_trailing_junk.jpg", buf.getvalue() + b"junk" * 50)):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        names.append(name)

    save("png_rgb.png", Image.fromarray(pattern(230, 170, 10)))
    save("png_gray.png", Image.fromarray(gray(190, 230, 11), "L"))
    la = np.stack([gray(120, 90, 12), alpha(120, 90)], -1)
    save("png_gray_alpha.png", Image.fromarray(la, "LA"))
    rgba = np.concatenate([pattern(160, 140, 13), alpha(160, 140)[..., None]], -1)
    save("png_rgba.png", Image.fromarray(rgba, "RGBA"))
    pal = Image.fromarray(pattern(150, 110, 14)).quantize(colors=200, method=Image.Quantize.MEDIANCUT)
    save("png_palette.png", pal)
    pal.info["transparency"] = 3
    save("png_palette_trns.png", pal, transparency=3)
    save("png_small_50x37.png", Image.fromarray(pattern(50, 37, 15)))
    save("png_tall.png", Image.fromarray(pattern(60, 1500, 16)))
    save("png_dark.png", Image.fromarray(pattern(140, 120, 17, lo=0, hi=30)))
    save("png_black.png", Image.fromarray(np.zeros((40, 30, 3), np.uint8)))
    save("png_1x1.png", Image.fromarray(np.full((1, 1, 3), 77, np.uint8)))

    g16 = (gray(100, 80, 18).astype(np.uint32) * 257 // 3).astype(np.uint16)
    g16[:10] = np.arange(100, dtype=np.uint16)[None, :] * 3  # values below 256 too
    raw_png("png_gray16.png", g16, 16, 0)
    rgb16 = pattern(90, 70, 19).astype(np.uint16) * 257 + 13
    raw_png("png_rgb16.png", rgb16, 16, 2)
    rgba16 = np.concatenate([rgb16, (alpha(90, 70).astype(np.uint16) * 256)[..., None]], -1)
    raw_png("png_rgba16.png", rgba16, 16, 6)
    la16 = np.stack([g16, g16 // 2], -1)
    raw_png("png_gray_alpha16.png", la16, 16, 4)
    raw_png("png_interlaced.png", pattern(123, 97, 20), 8, 2, interlace=True)
    raw_png("png_interlaced_rgba16.png", rgba16, 16, 6, interlace=True)
    g = gray(77, 45, 21)
    raw_png("png_gray1.png", g >> 7, 1, 0)
    raw_png("png_gray2.png", g >> 6, 2, 0, interlace=True)
    raw_png("png_gray4.png", g >> 4, 4, 0)
    raw_png("png_gray_trns.png", g, 8, 0, trns=struct.pack(">H", 100))
    raw_png("png_rgb_trns.png", pattern(64, 48, 22), 8, 2, trns=struct.pack(">HHH", 1, 2, 3))
    idx = (g >> 4).astype(np.uint8)  # 16 colours needed, 10 in the palette
    plte = np.random.default_rng(23).integers(0, 256, (10, 3))
    raw_png("png_palette4_short.png", idx, 4, 3, palette=plte, trns=bytes([0, 128, 255]))
    buf = io.BytesIO()
    Image.fromarray(pattern(70, 50, 37)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    i = png.index(b"IEND") - 8  # last byte of the IDAT CRC
    png[i] ^= 0x55
    with open(os.path.join(d, "png_bad_idat_crc.png"), "wb") as f:
        f.write(png)
    names.append("png_bad_idat_crc.png")
    raw_png("png_palette1.png", g >> 7, 1, 3, palette=[[200, 10, 30], [5, 250, 90]])

    wp = Image.fromarray(pattern(210, 150, 24))
    save("webp_lossy.webp", wp, quality=80)
    save("webp_lossless.webp", wp, lossless=True)
    wa = Image.fromarray(np.concatenate([pattern(130, 100, 25), alpha(130, 100)[..., None]], -1), "RGBA")
    save("webp_lossless_alpha.webp", wa, lossless=True, exact=True)
    save("webp_lossy_alpha.webp", wa, quality=70)

    gp = Image.fromarray(pattern(170, 120, 26)).quantize(colors=64)
    save("gif_basic.gif", gp)
    save("gif_trns.gif", gp, transparency=5)
    save("gif_gray.gif", Image.fromarray(gray(90, 70, 27), "L"))
    for name, kw in (("gif_offset.gif", {}), ("gif_offset_trns.gif", {"transparency": 7})):
        buf = io.BytesIO()
        Image.fromarray(pattern(80, 60, 28)).quantize(colors=32).save(buf, "GIF", **kw)
        with open(os.path.join(d, name), "wb") as f:
            f.write(gif_reframe(buf.getvalue(), (100, 75), (13, 9)))
        names.append(name)
    return names


def bad_images(d):
    names = []

    def put(name, data):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        names.append(name)

    buf = io.BytesIO()
    Image.fromarray(pattern(300, 200, 30)).save(buf, "JPEG", quality=90)
    jpg = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(pattern(300, 200, 31)).save(buf, "JPEG", quality=90, progressive=True)
    pjpg = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(pattern(300, 200, 32)).save(buf, "PNG")
    png = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(pattern(100, 80, 33)).quantize(64).save(buf, "GIF")
    gif = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(pattern(100, 80, 34)).save(buf, "WEBP", quality=80)
    webp = buf.getvalue()

    put("bad_empty.jpg", b"")
    put("bad_truncated.jpg", jpg[: len(jpg) * 2 // 3])
    put("bad_truncated_progressive.jpg", pjpg[: len(pjpg) // 2])
    put("bad_header_only.jpg", jpg[:300])
    put("bad_truncated.png", png[: len(png) // 2])
    put("bad_truncated.gif", gif[: len(gif) // 2])
    put("bad_truncated.webp", webp[: len(webp) // 2])
    put("bad_random.bin", np.random.default_rng(35).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    put("bad_text.txt", b"this is not an image, just some text\n" * 20)
    put("bad_magic_only.png", b"\x89PNG\r\n\x1a\n")
    bomb_png(os.path.join(d, "bad_bomb.png"), 100000, 100000)
    names.append("bad_bomb.png")
    bomb_png(os.path.join(d, "bad_zero_width.png"), 0, 100)
    names.append("bad_zero_width.png")
    # A JPEG whose SOF declares 60000x60000 (3.6e9 pixels > PIL's limit).
    i = jpg.index(b"\xff\xc0")
    put("bad_bomb.jpg", jpg[: i + 5] + struct.pack(">HH", 60000, 60000) + jpg[i + 9:])
    # A GIF whose logical screen is 65535x65535.
    put("bad_bomb.gif", gif[:6] + struct.pack("<HH", 65535, 65535) + gif[10:])
    return names


# ---------------------------------------------------------------- reference
def weight_mat(n_in, n_out):
    """[n_out, n_in] weights of jax.image.resize bilinear with antialias."""
    s = n_out / n_in
    ks = max(1.0 / s, 1.0)
    c = (np.arange(n_out) + 0.5) / s - 0.5
    w = np.maximum(0.0, 1.0 - np.abs(c[:, None] - np.arange(n_in)[None, :]) / ks)
    return w / w.sum(axis=1, keepdims=True)


def resize(x, h, w):
    if x.shape[0] != h:
        x = np.einsum("oi,ijc->ojc", weight_mat(x.shape[0], h), x)
    if x.shape[1] != w:
        x = np.einsum("oj,ijc->ioc", weight_mat(x.shape[1], w), x)
    return x


def preprocess(rgb, size):
    x = rgb.astype(np.float64)
    x = x / (x.max() + 1e-12)
    x = resize(x, 224, 224)
    # largest centred square crop: a no-op on 224x224
    x = resize(x, size, size)
    return (x - MEAN) / STD


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1:
        sys.exit(__doc__)
    d = args[0]
    os.makedirs(d, exist_ok=True)
    good = good_images(d)
    bad = bad_images(d)
    with open(os.path.join(d, "good.txt"), "w") as f:
        f.write("".join(n + "\n" for n in good))
    with open(os.path.join(d, "bad.txt"), "w") as f:
        f.write("".join(n + "\n" for n in bad))
    if "--no-expected" in sys.argv:
        return
    for n in good:
        rgb = np.asarray(Image.open(os.path.join(d, n)).convert("RGB"))
        np.save(os.path.join(d, n + ".rgb.npy"), rgb)
        np.save(os.path.join(d, n + ".pre.npy"), preprocess(rgb, 224))
        np.save(os.path.join(d, n + ".pre64.npy"), preprocess(rgb, 64))


if __name__ == "__main__":
    main()
