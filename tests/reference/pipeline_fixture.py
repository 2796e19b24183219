#!/usr/bin/python3
"""Fixture for tests/t_mine_pipeline.sh: a loopback web site and a WARC
crawl of it, so the whole mining pipeline (pages -> fetch -> pairs ->
instruct -> train) runs end to end.

  pipeline_fixture.py DIR

Serves DIR/site/ on 127.0.0.1 (a free port), generates the images (each a
different random picture, 160x160 PNG), writes DIR/crawl.warc.gz: one gzip
member per record, a warcinfo record and one HTML response per page (3
pages, 4 content images each plus a logo and a tracking pixel), then
DIR/expected.json (pages and image URLs that must survive cleaning) and
last DIR/port (atomically; the test polls for it).  Serves until killed.
"""
import gzip
import io
import json
import os
import socket
import sys
import zlib
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image, ImageDraw

PAGES = [
    ("Our kitchen renovation", ["the old kitchen before work", "new oak cabinets",
                                "the kitchen island at night", "tiles over the sink"]),
    ("Hiking the ridge trail", ["trailhead sign in fog", "view from the summit",
                                "a marmot near the path", "our tent at the lake"]),
    ("Grandma's apple pie", ["sliced apples in a bowl", "rolling the dough",
                             "the pie before baking", "a slice with cream"]),
]


def picture(rng, path):
    img = Image.new("RGB", (160, 160), tuple(int(c) for c in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rng.integers(0, 140, 2)
        w, h = rng.integers(10, 60, 2)
        box = [int(x), int(y), int(x + w), int(y + h)]
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (d.ellipse if rng.integers(2) else d.rectangle)(box, fill=colour)
    img.save(path)


def record(kind, uri, payload, ctype):
    head = ("WARC/1.1\r\nWARC-Type: %s\r\nWARC-Target-URI: %s\r\n"
            "WARC-Date: 2026-11-28T00:00:00Z\r\nWARC-Record-ID: <urn:uuid:%08d>\r\n"
            "Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (kind, uri, zlib.crc32(uri.encode()), ctype, len(payload)))
    return gzip.compress(head.encode() + payload + b"\r\n\r\n")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def main():
    out = os.path.abspath(sys.argv[1])
    site = os.path.join(out, "site")
    os.makedirs(os.path.join(site, "img"), exist_ok=True)
    handler = lambda *a, **k: QuietHandler(*a, directory=site, **k)  # noqa: E731
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    port = srv.server_address[1]
    base = "http://127.0.0.1:%d" % port
    rng = np.random.default_rng(7)
    warc = io.BytesIO()
    warc.write(record("warcinfo", "", b"software: pipeline_fixture.py\r\n",
                      "application/warc-fields"))
    expected = []
    for p, (title, alts) in enumerate(PAGES):
        imgs = []
        body = ["<html lang=en><head><title>%s</title></head><body>" % title,
                '<img src="/img/logo.png" alt="site logo" width=120 height=40>',
                '<img src="/img/pixel.gif" width=1 height=1>']
        for i, alt in enumerate(alts):
            name = "p%d_%d.png" % (p, i)
            picture(rng, os.path.join(site, "img", name))
            body.append('<figure><img src="img/%s" alt="%s" width=160 height=160>'
                        "<figcaption>%s</figcaption></figure>" % (name, alt, alt))
            imgs.append(base + "/img/" + name)
        body.append("</body></html>")
        html = "\n".join(body).encode()
        http = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                b"Content-Length: %d\r\n\r\n" % len(html)) + html
        url = "%s/page%d.html" % (base, p)
        warc.write(record("response", url, http, "application/http; msgtype=response"))
        expected.append({"url": url, "title": title, "images": imgs})
    picture(rng, os.path.join(site, "img", "logo.png"))
    with open(os.path.join(out, "crawl.warc.gz"), "wb") as f:
        f.write(warc.getvalue())
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    with open(os.path.join(out, "port.tmp"), "w") as f:
        f.write(str(port))
    os.rename(os.path.join(out, "port.tmp"), os.path.join(out, "port"))
    srv.serve_forever()


if __name__ == "__main__":
    main()
