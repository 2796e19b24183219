#!/usr/bin/env python3
"""Loopback image server for tests/t_mine_fetch.sh (`magiclens mine fetch`).

    img_server.py DIR [--scenario main|kill|bench]

Listens on two loopback addresses (127.0.0.1 and 127.0.0.2, so the fetcher
sees two hosts), writes DIR/pages.jsonl (the pages to fetch) and
DIR/expected.json (what the fetch must produce, derived here from how each
URL behaves, never from the C output), and last DIR/port (atomically): the
test polls for that file.  Then it serves until killed.

Endpoints: /img/NAME (generated images, PIL), /redir/NAME (302 to it),
/flaky500/NAME (500, then the image, alternating per path), /flaky429/NAME
(429 + Retry-After: 1, then the image), /always500, /404, /slow (200
image/jpeg trickling one byte per 50 ms forever), /huge_cl (over the size
cap, with Content-Length), /huge_nocl (same, no Content-Length), /html (PNG
bytes as text/html), /garbage (image/jpeg, random bytes), /corrupt (JPEG
signature, then garbage), /loop (redirects to itself), /tofile and /toftp
(redirects to file:// and ftp://), /stats (JSON: requests and their times per path, request
times per address, the most requests in progress at once per address; not counted itself).

A request counts as in progress from its first line until just before the
server sends what lets the client finish: the last byte of an image, the
headers of anything else (a client may drop an error page, a redirect, a
wrong type or an endless body as soon as it starts), so a client that keeps
to N transfers per host can never be seen above N.

phash() below is the reference pHash of src/mine/phash.h, in numpy.
"""
import hashlib
import io
import json
import os
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

MAX_BYTES = 100_000  # the --max-bytes the test uses
SLOW_STEP = 0.05


# ---- the reference perceptual hash ------------------------------------------------

def _area(n):
    w = np.zeros((32, n))
    scale = n / 32
    for o in range(32):
        a, b = o * scale, (o + 1) * scale
        for i in range(int(np.floor(a)), min(n, int(np.ceil(b)))):
            lo, hi = max(i, a), min(i + 1, b)
            if hi > lo:
                w[o, i] = (hi - lo) / scale
    return w


def phash(rgb):
    """64-bit DCT pHash of an HxWx3 uint8 array, as a 16-digit hex string."""
    g = rgb.astype(np.float64)
    grey = 0.299 * g[..., 0] + 0.587 * g[..., 1] + 0.114 * g[..., 2]
    small = _area(grey.shape[0]) @ grey @ _area(grey.shape[1]).T
    k, n = np.arange(8)[:, None], np.arange(32)[None, :]
    c = np.cos(np.pi * k * (2 * n + 1) / 64)
    d = (c @ small @ c.T).flatten()
    med = np.median(d)
    h = 0
    for i, v in enumerate(d):
        if v > med:
            h |= 1 << (63 - i)
    return f"{h:016x}"


def hamming(a, b):
    return bin(int(a, 16) ^ int(b, 16)).count("1")


# ---- images --------------------------------------------------------------------

def smooth(seed, w, h):
    """A smooth random picture: a coarse colour grid upscaled (stable pHash)."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize((w, h), Image.BICUBIC)


def encode(img, fmt, **kw):
    b = io.BytesIO()
    if fmt == "GIF":
        img = img.convert("P", palette=Image.ADAPTIVE, colors=64)
    img.save(b, fmt, **kw)
    return b.getvalue()


CT = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}


def make_files(n_distinct):
    """name -> (bytes, content type).  a0..aN distinct pictures in turns of
    JPEG, PNG, WebP, GIF, plus a near duplicate of a1, a byte copy of a2, a
    tiny and a too-wide picture."""
    files = {}
    exts = ["jpg", "png", "webp", "gif"]
    for i in range(n_distinct):
        ext = exts[i % 4]
        w, h = 200 + 8 * (i % 5), 160 + 6 * (i % 3)
        img = smooth(1000 + i, w, h)
        data = encode(img, {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}[ext],
                      **({"quality": 90} if ext in ("jpg", "webp") else {}))
        files[f"a{i}.{ext}"] = data
    a1 = Image.open(io.BytesIO(files["a1.png"])).convert("RGB")
    files["a1_near.jpg"] = encode(a1.resize((a1.width * 9 // 10, a1.height * 9 // 10),
                                            Image.BILINEAR), "JPEG", quality=80)
    files["a2_copy.webp"] = files["a2.webp"]
    files["tiny.png"] = encode(smooth(7, 64, 64), "PNG")
    files["wide.jpg"] = encode(smooth(8, 800, 200), "JPEG", quality=85)
    return {k: (v, CT[k.rsplit(".", 1)[1]]) for k, v in files.items()}


def decoded(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ---- scenarios -------------------------------------------------------------------
# A page is a list of (host, path, expected reason or "kept", served name or None).

def scenario_main():
    A, B = "A", "B"
    pages = [
        [(A, "/img/a0.jpg", "kept", "a0.jpg"), (A, "/img/a1.png", "kept", "a1.png"),
         (A, "/img/a1_near.jpg", "duplicate_in_page", None), (A, "/404", "http_404", None)],
        [(A, "/img/a2.webp", "kept", "a2.webp"), (A, "/img/a2_copy.webp", "duplicate_in_page", None),
         (A, "/redir/a3.gif", "kept", "a3.gif"), (A, "/flaky500/a4.jpg", "kept", "a4.jpg")],
        [(A, "/img/a5.png", "kept", "a5.png"), (A, "/flaky429/a6.webp", "kept", "a6.webp"),
         (B, "/slow", "timeout", None), (B, "/huge_cl", "too_big", None),
         (B, "/huge_nocl", "too_big", None)],
        [(B, "/html", "not_image", None), (B, "/garbage", "bad_magic", None),
         (B, "/corrupt", "decode_error", None), (A, "/img/tiny.png", "too_small", None),
         (A, "/img/wide.jpg", "aspect", None)],
        [(A, "/loop", "too_many_redirects", None), (B, "/tofile", "bad_redirect", None),
         (B, "/toftp", "bad_redirect", None), (B, "/img/a0.jpg", "duplicate_earlier_page", None),
         (A, "/img/a7.gif", "kept", "a7.gif")],
        "BAD",
        [],
        [(A, "/img/a8.jpg", "kept", "a8.jpg")],
        [("ftp", "ftp://127.0.0.1/x.png", "bad_url", None), (None, None, "bad_url", None),
         (A, "/img/a9.png", "kept", "a9.png"), (B, "/always500", "http_500", None),
         ("refused", "/img/a10.jpg", "connect_error", None)],
        [(A, "/img/a10.webp", "kept", "a10.webp"), (B, "/img/a11.gif", "kept", "a11.gif")],
        [(A, "/img/a12.jpg", "kept", "a12.jpg"), (A, "/img/a13.png", "kept", "a13.png"),
         (B, "/img/a14.webp", "kept", "a14.webp"), (A, "/img/a15.gif", "kept", "a15.gif")],
    ]
    return pages, 16


def scenario_kill():
    """Pages of 2-3 images with a slow (timing out) image now and then, so a
    run lasts long enough to be killed in the middle."""
    pages, k = [], 0
    for g in range(12):
        imgs = []
        for j in range(2 + g % 2):
            host = "A" if (g + j) % 2 == 0 else "B"
            name = f"a{k}.{['jpg', 'png', 'webp', 'gif'][k % 4]}"
            imgs.append((host, f"/img/{name}", "kept", name))
            k += 1
        if g % 3 == 1:
            imgs.append(("B", "/slow", "timeout", None))
        if g == 5:
            imgs.append(("A", "/404", "http_404", None))
        pages.append(imgs)
    return pages, k


def scenario_bench():
    pages, k = [], 0
    for g in range(100):
        imgs = []
        for j in range(4):
            name = f"a{k}.jpg"
            imgs.append(("A" if j % 2 else "B", f"/img/{name}", "kept", name))
            k += 1
        pages.append(imgs)
    return pages, k


# ---- the server ----------------------------------------------------------------------

class State:
    def __init__(self, files):
        self.files = files
        self.lock = threading.Lock()
        self.active = {}
        self.max_active = {}
        self.requests = {}
        self.times = {}
        self.starts = {}
        self.flaky = {}
        self.delay = 0.03


def make_handler(state):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *a):
            pass

        def _enter(self):
            addr = self.server.server_address[0]
            with state.lock:
                state.requests[self.path] = state.requests.get(self.path, 0) + 1
                state.times.setdefault(self.path, []).append(time.monotonic())
                state.starts.setdefault(addr, []).append(time.monotonic())
                state.active[addr] = state.active.get(addr, 0) + 1
                state.max_active[addr] = max(state.max_active.get(addr, 0), state.active[addr])
            self._counted = addr

        def _release(self):
            if self._counted:
                with state.lock:
                    state.active[self._counted] -= 1
                self._counted = None

        def _send(self, code, body, ctype, extra=(), image=False):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra:
                self.send_header(k, v)
            if not image:  # the client may stop at the first byte
                self._release()
            self.end_headers()
            if body:
                self.wfile.write(body[:-1])
            self._release()
            if body:
                self.wfile.write(body[-1:])

        def _redirect(self, where):
            self.send_response(302)
            self.send_header("Location", where)
            self.send_header("Content-Length", "0")
            self._release()
            self.end_headers()

        def _image(self, name):
            data, ctype = state.files[name]
            time.sleep(state.delay)  # long enough for transfers to overlap
            self._send(200, data, ctype, image=True)

        def _alternate(self, key):
            with state.lock:
                n = state.flaky.get(key, 0)
                state.flaky[key] = n + 1
            return n % 2 == 0

        def do_GET(self):
            p = self.path
            self._counted = None
            if p == "/stats":
                with state.lock:
                    body = json.dumps({"requests": state.requests, "times": state.times,
                                       "starts": state.starts,
                                       "max_active": state.max_active})
                return self._send(200, body.encode(), "application/json")
            self._enter()
            try:
                self._route(p)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                self._release()

        def _route(self, p):
            if p.startswith("/img/") and p[5:] in state.files:
                return self._image(p[5:])
            if p.startswith("/redir/"):
                return self._redirect("/img/" + p[7:])
            if p.startswith("/flaky500/"):
                if self._alternate(p):
                    return self._send(500, b"try again", "text/plain")
                return self._image(p[10:])
            if p.startswith("/flaky429/"):
                if self._alternate(p):
                    return self._send(429, b"slow down", "text/plain", [("Retry-After", "1")])
                return self._image(p[10:])
            if p == "/always500":
                return self._send(500, b"broken", "text/plain")
            if p == "/slow":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self._release()
                self.end_headers()
                self.wfile.write(b"\xff\xd8\xff")
                while True:  # until the client hangs up
                    time.sleep(SLOW_STEP)
                    self.wfile.write(b"\0")
            if p in ("/huge_cl", "/huge_nocl"):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                size = 3 * MAX_BYTES
                if p == "/huge_cl":
                    self.send_header("Content-Length", str(size))
                self._release()
                self.end_headers()
                chunk = b"\xff\xd8\xff" + bytes(16381)
                for _ in range(size // len(chunk)):
                    self.wfile.write(chunk)
                return
            if p == "/html":
                return self._send(200, state.files["a1.png"][0], "text/html; charset=utf-8")
            if p == "/garbage":
                return self._send(200, bytes(random.Random(3).randrange(256) for _ in range(5000)),
                                  "image/jpeg")
            if p == "/corrupt":
                return self._send(200, b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "image/jpeg")
            if p == "/loop":
                return self._redirect("/loop")
            if p == "/tofile":
                return self._redirect("file:///etc/passwd")
            if p == "/toftp":
                return self._redirect("ftp://127.0.0.1/a0.jpg")
            return self._send(404, b"not found", "text/plain")

    return H


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def main():
    out = sys.argv[1]
    scenario = "main"
    if "--scenario" in sys.argv:
        scenario = sys.argv[sys.argv.index("--scenario") + 1]
    pages, n = {"main": scenario_main, "kill": scenario_kill, "bench": scenario_bench}[scenario]()
    if scenario == "bench":
        files = {}
        for i in range(n):
            files[f"a{i}.jpg"] = (encode(smooth(5000 + i, 256, 256), "JPEG", quality=85),
                                  "image/jpeg")
    else:
        files = make_files(n)
    state = State(files)
    if scenario == "bench":
        state.delay = 0
    handler = make_handler(state)
    servers = {h: ThreadingHTTPServer((ip, 0), handler) for h, ip in (("A", "127.0.0.1"),
                                                                        ("B", "127.0.0.2"))}
    for s in servers.values():
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, daemon=True).start()
    base = {h: f"http://{s.server_address[0]}:{s.server_address[1]}" for h, s in servers.items()}
    base["refused"] = f"http://127.0.0.1:{closed_port()}"

    lines, expected = [], {"images": [], "keys": {}, "dropped": {}, "groups": len(pages),
                           "pages_bad": 0, "images_in": 0}
    for g, page in enumerate(pages):
        if page == "BAD":
            lines.append('{"url": "http://x/", "images": [truncated')
            expected["pages_bad"] += 1
            expected["images"].append([])
            continue
        imgs, why = [], []
        for i, (host, path, reason, name) in enumerate(page):
            url = None if host is None else path if host == "ftp" else base[host] + path
            imgs.append({"url": url, "alt": f"alt {g}.{i}", "title": None, "width": 300,
                         "height": None, "caption": None, "context": f"context of {g}.{i}"})
            why.append(reason)
            expected["images_in"] += 1
            if reason == "kept":
                data, ctype = files[name]
                key = f"g{g:08d}_{i:03d}"
                dec = decoded(data)
                expected["keys"][key] = {
                    "ext": name.rsplit(".", 1)[1], "sha256": hashlib.sha256(data).hexdigest(),
                    "url": url, "final_url": base[host] + "/img/" + name if "redir" in path else url,
                    "content_type": ctype, "width": int(dec.shape[1]), "height": int(dec.shape[0]),
                    "phash": phash(dec), "group": g, "index": i, "bytes": len(data)}
            else:
                expected["dropped"][reason] = expected["dropped"].get(reason, 0) + 1
        expected["images"].append(why)
        lines.append(json.dumps({"url": f"http://site{g}.test/page", "title": f"page {g}",
                                 "lang": "en", "images": imgs, "warc": "t.warc", "offset": g,
                                 "dropped": {}}))
    # The design must hold: distinct pictures far apart, duplicates close.
    if scenario == "main":
        ph = {k: phash(decoded(v[0])) for k, v in files.items()}
        assert hamming(ph["a1.png"], ph["a1_near.jpg"]) <= 3, (ph["a1.png"], ph["a1_near.jpg"])
        distinct = [k for k in ph if k.startswith("a") and "_" not in k]
        for x in distinct:
            for y in distinct:
                if x < y:
                    assert hamming(ph[x], ph[y]) > 12, (x, y, hamming(ph[x], ph[y]))
    with open(f"{out}/pages.jsonl", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(f"{out}/expected.json", "w") as f:
        json.dump(expected, f, indent=1)
    with open(f"{out}/port.tmp", "w") as f:
        f.write(json.dumps(base))
    os.replace(f"{out}/port.tmp", f"{out}/port")
    threading.Event().wait()


if __name__ == "__main__":
    main()
