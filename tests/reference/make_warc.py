#!/usr/bin/env python3
"""Synthetic WARC/ARC files for `magiclens mine pages`, with the expected
pages.jsonl computed here, independently of the C code.

The expectation is derived from the page *definitions* (which images each
page holds, with which attributes, inside which markup), never by parsing the
generated HTML: this file implements the documented rules of docs/mining.md
("pages") on those definitions -- reference choice (srcset > data-srcset >
data-src > data-lazy-src > data-original > src), URL resolution
(urllib.parse.urljoin), cleaning rules, duplicate removal within a page and
across pages, the min..max image filter, and the context text rule.

usage: make_warc.py OUTDIR
writes OUTDIR/t1.warc.gz   one gzip member per record; a damaged member; a
                           truncated record at the end
       OUTDIR/t2.warc      uncompressed; garbage between records
       OUTDIR/t3.warc.gz   one gzip stream holding all records
       OUTDIR/t4.arc       ARC v1
       OUTDIR/rules.json   a custom rules file
       OUTDIR/expected.jsonl, OUTDIR/expected_rules.jsonl (--rules rules.json --min-images 1)
       OUTDIR/expected_meta.json  counts and warning offsets
"""
import copy
import gzip
import html
import json
import os
import re
import sys
import zlib
from urllib.parse import urljoin, urldefrag, urlsplit

try:
    import brotli  # optional: the br case is skipped without it
except ImportError:
    brotli = None

# ---- the documented default rules (docs/mining.md) -----------------------
DEFAULT_RULES = {
    "min_images": 2, "max_images": 50, "min_size": 100, "pixel_max": 2,
    "keywords": ["logo", "icon", "sprite", "favicon", "avatar", "badge", "button",
                 "spacer", "pixel", "emoji", "smiley", "spinner"],
    "ad_hosts": ["doubleclick.net", "googlesyndication.com", "facebook.com/tr"],
    "pixel_paths": ["/pixel", "1x1", "/spacer.", "/clear.gif", "/blank.gif", "__utm.gif",
                    "/b/ss/", "/beacon", "transparent.gif", "matomo.php", "piwik.php"],
    "drop_extensions": [".svg", ".gif", ".ico"],
}
CUSTOM_RULES = {"drop_extensions": [".svg"], "min_size": 40, "keywords": ["logo"],
                "ad_hosts": ["doubleclick.net"]}

WS = " \t\n\r\f"


def collapse(s):
    s = re.sub(r"[ \t\n\r\f]+", " ", s or "").strip()
    return s or None


def context(before, after):
    b = collapse(before) or ""
    a = collapse(after) or ""
    parts = [b[-100:].strip(), a[:100].strip()]
    return " ".join(p for p in parts if p) or None


def srcset_pick(v):
    best, best_w, best_x = None, -1, -1
    for cand in v.split(","):
        f = cand.split()
        if not f:
            continue
        w, x = -1, 1.0
        for d in f[1:]:
            if d.endswith("w"):
                w = float(d[:-1])
            elif d.endswith("x"):
                x = float(d[:-1])
        better = best is None or (w > best_w if w >= 0 else (best_w < 0 and x > best_x))
        if better:
            best, best_w, best_x = f[0], w, x
    return best


def pick_ref(attrs):
    for k in ("srcset", "data-srcset"):
        if k in attrs and srcset_pick(attrs[k]):
            return srcset_pick(attrs[k])
    for k in ("data-src", "data-lazy-src", "data-original", "src"):
        if k in attrs and attrs[k].strip(WS):
            return attrs[k]
    return None


def size(v):
    v = (v or "").strip(WS)
    return int(v) if re.fullmatch(r"[0-9]{1,9}", v) else None


def resolve(base, ref):
    """(url, None) or (None, reason) -- browsers' cleaning, then urljoin."""
    if ref is None:
        return None, "no_url"
    ref = ref.strip(WS).replace("\t", "").replace("\n", "").replace("\r", "")
    if not ref:
        return None, "no_url"
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", ref)
    if m and m.group(1).lower() == "data":
        return None, "data_uri"
    if m and m.group(1).lower() not in ("http", "https"):
        return None, "not_http"
    url = urldefrag(urljoin(base, ref))[0].replace(" ", "%20")
    return url, None


def words(s):
    return [w.lower() for w in re.findall(r"[A-Za-z]+", s or "")]


def rule_reason(rules, url, im):
    parts = urlsplit(url)
    host, path = parts.hostname or "", parts.path.lower()
    for e in rules["ad_hosts"]:
        h, _, p = e.partition("/")
        if (host == h or host.endswith("." + h)) and (not _ or path.startswith("/" + p)):
            return "ad_host"
    w, h = size(im["attrs"].get("width")), size(im["attrs"].get("height"))
    if (w is not None and w <= rules["pixel_max"]) or (h is not None and h <= rules["pixel_max"]) \
            or any(p in path for p in rules["pixel_paths"]):
        return "tracking_pixel"
    texts = [path, im["attrs"].get("class", "") + " " + im["attrs"].get("id", ""),
             im["attrs"].get("alt", "")]
    for t in texts:
        for wd in words(t):
            if any(wd.endswith(k) or wd == k + "s" for k in rules["keywords"]):
                return "icon"
    if any(path.endswith(e) for e in rules["drop_extensions"]):
        return "extension"
    if (w is not None and w < rules["min_size"]) or (h is not None and h < rules["min_size"]):
        return "too_small"
    return None


def expected_image(url, im):
    a = im["attrs"]
    lay = im.get("layout", "p")
    if lay == "figure":
        ctx, cap = context("", im["caption"]), collapse(im["caption"])
    elif lay == "bare":
        ctx, cap = None, None
    else:
        ctx, cap = context(im.get("before", ""), im.get("after", "")), None
    return {"url": url, "alt": collapse(a.get("alt")), "title": collapse(a.get("title")),
            "width": size(a.get("width")), "height": size(a.get("height")),
            "caption": cap, "context": ctx}


def expected_pages(pages, rules):
    """pages: (warc, offset, page definition) in processing order."""
    seen, out = set(), []
    for warc, offset, pg in pages:
        base = urljoin(pg["url"], pg["base"]) if pg.get("base") else pg["url"]
        kept, in_page, dropped = [], set(), {}
        for im in pg["images"]:
            url, why = resolve(base, pick_ref(im["attrs"]))
            if not why:
                why = rule_reason(rules, url, im)
            if not why and url in in_page:
                why = "duplicate_in_page"
            if not why:
                in_page.add(url)
                if url in seen:
                    why = "seen_on_earlier_page"
                seen.add(url)
            if why:
                dropped[why] = dropped.get(why, 0) + 1
            else:
                kept.append(expected_image(url, im))
        if rules["min_images"] <= len(kept) <= rules["max_images"]:
            out.append({"url": pg["url"], "title": collapse(pg.get("title")), "lang": pg.get("lang"),
                        "images": kept, "warc": warc, "offset": offset, "dropped": dropped})
    return out


# ---- page definitions --------------------------------------------------
LONG_BEFORE = " ".join(f"word{i:03d}" for i in range(40))   # 319 chars
LONG_AFTER = " ".join(f"next{i:03d}" for i in range(25))    # 199 chars


def img(layout="p", before="", after="", caption=None, **attrs):
    d = {"attrs": {k.rstrip("_").replace("_", "-"): str(v) for k, v in attrs.items()}, "layout": layout,
         "before": before, "after": after}
    if caption is not None:
        d["caption"] = caption
    return d


def page1():
    return {"url": "http://www.example.com/articles/page1.html", "title": "Page one — café",
            "lang": "en", "images": [
                img("figure", caption="The red car,\n   parked.", src="img/car.jpg", width=640,
                    height=480, alt="A red car", title="Car"),
                img(before="Here is the view from the top.", after="It was a clear day.",
                    src="b-small.jpg", srcset="b-small.jpg 320w, b-large.jpg 1280w, b-mid.jpg 640w",
                    alt="Mountain view"),
                img(before="A lake:", src="data:image/gif;base64,R0lGODlhAQABAAAAACw=",
                    data_src="lazy/c.jpg", alt="Lazy loaded lake"),
                img(src="https://tracker.example.net/p.png?id=1", width=1, height=1),
                img(src="/static/site-logo.png", alt="Example"),
                img(src="https://ad.doubleclick.net/ad/x.jpg", width=300, height=250),
                img(src="/img/chart.svg", alt="A chart"),
                img(src="/img/thumb-tiny.jpg", width=50, height=50, alt="tiny"),
                img(src="img/car.jpg", alt="the car again"),
                img(src="data:image/png;base64,iVBORw0KGgo="),
                img(src="ftp://ftp.example.org/pic.jpg"),
                img(before="Our banner", src="https://cdn.example.org/shared/banner.jpg", width=728,
                    height=300),
                img(alt="nothing at all"),
                img(src="/img/star.png", class_="rating-icon", alt="4 stars"),
                img(before=LONG_BEFORE, after=LONG_AFTER, src="photos/long.jpg", alt="long"),
                img(after="Sharp.", srcset="d1.jpg 1x, d2.jpg 2x", alt="density"),
                img(src="photos/my photo.jpg", alt="with a space"),
                img(src="/img/placeholder.png", data_lazy_src="lazy/e.jpg", alt="lazy two"),
                img(src="photos/wide.jpg", width="100%", height="200", alt="percent width"),
                img("nested", before="Text above.", after="Text below.", src="photos/nested.jpg"),
                img("bare", src="photos/bare.jpg"),
                img(src="  photos/frag.jpg#section ", alt="fragment"),
                img(src="/img/spacer.gif"),
                img(src="photos/portrait.jpg", alt="Company avatar"),
                img(src="photos/anim.gif", alt="animation"),
            ]}


def page2():
    return {"url": "http://www.example.com/shop/page2.html", "title": "Café Crème à la carte",
            "lang": "fr", "base": "https://static.example.net/assets/", "images": [
                img(before="Pommes:", src="img/p2a.jpg", alt="Süße Äpfel"),
                img(src="../p2b.jpg", alt="Crème brûlée", width=400, height=300),
                img(src="//cdn.example.org/shared/banner.jpg", alt="banner"),
                img(src="/root.jpg", alt="Racine"),
            ]}


def simple(url, title, names, lang=None, **extra):
    return dict({"url": url, "title": title, "lang": lang,
                 "images": [img(before=f"Picture {i}.", src=n, alt=f"Picture {i}")
                            for i, n in enumerate(names)]}, **extra)


# ---- HTML, HTTP, WARC, ARC ---------------------------------------------
def tag(a):
    return "<img " + " ".join(f'{k}="{html.escape(v, quote=True)}"' for k, v in a.items()) + ">"


def place(im):
    t, e = tag(im["attrs"]), html.escape
    lay = im["layout"]
    if lay == "figure":
        return f"<figure>{t}<figcaption>{e(im['caption'])}</figcaption></figure>"
    if lay == "nested":
        return f"<div><p>{e(im['before'])}</p><span>{t}</span><p>{e(im['after'])}</p></div>"
    if lay == "bare":
        return f"<div>{t}</div>"
    return f"<p>{e(im['before'])}{t}{e(im['after'])}</p>"


def page_html(pg, meta=""):
    lang = f' lang="{pg["lang"]}"' if pg.get("lang") else ""
    base = f'<base href="{pg["base"]}">' if pg.get("base") else ""
    body = "\n".join(place(im) for im in pg["images"])
    return (f"<!DOCTYPE html>\n<html{lang}><head>{meta}<title>{html.escape(pg['title'])}</title>"
            f"{base}</head>\n<body>\n<h1>Heading</h1>\n{body}\n</body></html>\n")


def chunk(body, n=100):
    out = b""
    for i in range(0, len(body), n):
        part = body[i:i + n]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


def http(body, ctype, status=200, cenc=None, chunked=False, eol=b"\r\n"):
    if cenc == "gzip":
        body = gzip.compress(body, mtime=0)
    elif cenc == "deflate":
        body = zlib.compress(body)
    elif cenc == "rawdeflate":
        c = zlib.compressobj(wbits=-15)
        body = c.compress(body) + c.flush()
        cenc = "deflate"
    elif cenc == "br":
        body = brotli.compress(body)
    heads = [b"HTTP/1.1 %d %s" % (status, b"OK" if status == 200 else b"Not Found"),
             b"Content-Type: " + ctype.encode(), b"Server: test"]
    if cenc:
        heads.append(b"Content-Encoding: " + cenc.encode())
    if chunked:
        heads.append(b"Transfer-Encoding: chunked")
        body = chunk(body)
    else:
        heads.append(b"Content-Length: %d" % len(body))
    return eol.join(heads) + eol + eol + body


class Warc:
    def __init__(self):
        self.n = 0

    def record(self, typ, uri, block, ctype, version="WARC/1.0", length=None, trailer=True):
        self.n += 1
        h = [version, f"WARC-Type: {typ}", f"WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-{self.n:012d}>",
             "WARC-Date: 2024-01-01T00:00:00Z"]
        if uri:
            h.append(f"WARC-Target-URI: {uri}")
        h += [f"Content-Type: {ctype}", f"Content-Length: {len(block) if length is None else length}"]
        return ("\r\n".join(h) + "\r\n\r\n").encode() + block + (b"\r\n\r\n" if trailer else b"")


def gz(b):
    return gzip.compress(b, mtime=0)


def damaged_member(b):
    """A gzip member whose first deflate block header is invalid (type 3)."""
    m = bytearray(gz(b))
    m[10] |= 0x06  # BTYPE bits of the first block = 11: reserved, inflate fails at once
    return bytes(m)


def build(outdir):
    W = Warc()
    HT = "text/html; charset=utf-8"
    pages = []      # (warc, offset, def) that reach image processing, in order
    meta = {"warnings": []}

    # ---- t1: one member per record --------------------------------------
    t1 = os.path.join(outdir, "t1.warc.gz")
    members = []  # (bytes, page def or None)
    p1, p2 = page1(), page2()
    members.append((gz(W.record("warcinfo", None, b"software: make_warc.py\r\n", "application/warc-fields")), None))
    members.append((gz(W.record("request", p1["url"], b"GET /articles/page1.html HTTP/1.1\r\nHost: www.example.com\r\n\r\n",
                                "application/http; msgtype=request")), None))
    members.append((gz(W.record("response", p1["url"], http(page_html(p1).encode("utf-8"), HT),
                                "application/http; msgtype=response")), p1))
    members.append((gz(W.record("response", "http://www.example.com/articles/img/car.jpg",
                                http(b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg"),
                                "application/http; msgtype=response")), None))
    # ISO-8859-1 declared in the HTTP header only; gzip content encoding, chunked
    members.append((gz(W.record("response", p2["url"],
                                http(page_html(p2).encode("latin-1"), "text/html; charset=ISO-8859-1",
                                     cenc="gzip", chunked=True),
                                "application/http; msgtype=response")), p2))
    members.append((gz(W.record("revisit", p1["url"], b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n",
                                "application/http; msgtype=response")), None))
    p3 = {"url": "http://www.example.com/one.html", "title": "Just one", "lang": None, "images": [
        img(before="Only", src="photos/only.jpg"), img(src="/icons/home.png"),
        img(src="photos/shared-later.jpg", width=50, height=50)]}
    members.append((gz(W.record("response", p3["url"], http(page_html(p3).encode(), HT),
                                "application/http; msgtype=response")), p3))
    members.append((gz(W.record("metadata", p3["url"], b"outlinks: none\r\n", "application/warc-fields")), None))
    # windows-1252 and Shift_JIS declared only by <meta> (no charset in HTTP)
    p4 = simple("http://www.example.com/cp1252.html", "“Smart” quotes cost 5 €",
                ["w1.jpg", "w2.jpg"])
    p4["images"][0]["attrs"]["alt"] = "A “quoted” picture – 10 €"
    members.append((gz(W.record("response", p4["url"],
                                http(page_html(p4, '<meta charset="windows-1252">').encode("cp1252"), "text/html"),
                                "application/http; msgtype=response")), p4))
    p5 = simple("http://www.example.jp/sjis.html", "日本語のページ", ["neko.jpg", "inu.jpg"], lang="ja")
    p5["images"][0]["attrs"]["alt"] = "猫の写真"
    p5["images"][1]["before"] = "犬です。"
    members.append((gz(W.record("response", p5["url"], http(page_html(
        p5, '<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">').encode("shift_jis"),
        "text/html"), "application/http; msgtype=response")), p5))
    p6 = simple("http://www.example.com/missing.html", "Not here", ["m1.jpg", "m2.jpg"])
    members.append((gz(W.record("response", p6["url"], http(page_html(p6).encode(), HT, status=404),
                                "application/http; msgtype=response")), None))
    p7 = simple("http://www.example.com/deflate.html", "Deflated", ["z1.jpg", "z2.jpg", "z1.jpg"])
    members.append((gz(W.record("response", p7["url"], http(page_html(p7).encode(), HT, cenc="deflate"),
                                "application/http; msgtype=response")), p7))
    p8 = simple("http://www.example.com/resource.html", "A resource record", ["r1.jpg", "r2.jpg"])
    members.append((gz(W.record("resource", p8["url"], page_html(p8).encode(), "text/html")), p8))
    if brotli:
        pb = simple("http://www.example.com/brotli.html", "Brotli", ["br1.jpg", "br2.jpg"])
        members.append((gz(W.record("response", pb["url"], http(page_html(pb).encode(), HT, cenc="br"),
                                    "application/http; msgtype=response")), pb))
    lost = simple("http://www.example.com/lost.html", "Lost in a damaged member", ["x1.jpg", "x2.jpg"])
    members.append((damaged_member(W.record("response", lost["url"], http(page_html(lost).encode(), HT),
                                            "application/http; msgtype=response")), "damaged"))
    p9 = simple("http://www.example.com/after-damage.html", "After the damage", ["a1.jpg", "a2.jpg"])
    members.append((gz(W.record("response", p9["url"], http(page_html(p9).encode(), HT),
                                "application/http; msgtype=response")), p9))
    cut = simple("http://www.example.com/cut.html", "Cut short", ["c1.jpg", "c2.jpg"])
    block = http(page_html(cut).encode(), HT)
    members.append((gz(W.record("response", cut["url"], block[:200], "application/http; msgtype=response",
                                length=len(block), trailer=False)), "truncated"))
    off = 0
    with open(t1, "wb") as f:
        for data, pg in members:
            if isinstance(pg, dict):
                pages.append((t1, off, pg))
            elif pg == "damaged":
                meta["warnings"].append(["t1.warc.gz", f"damaged gzip member at offset {off}"])
            elif pg == "truncated":
                meta["warnings"].append(["t1.warc.gz", f"record at offset {off} is truncated"])
            f.write(data)
            off += len(data)

    # ---- t2: plain, garbage between records ------------------------------
    t2 = os.path.join(outdir, "t2.warc")
    p10 = simple("http://www.example.org/plain.html", "Plain   file\n page", ["q1.jpg", "q2.jpg"], lang="en-GB")
    p11 = simple("http://www.example.org/raw.html", "Raw deflate, LF headers", ["s1.jpg", "s2.jpg"])
    p12 = simple("http://www.example.org/x.xhtml", "XHTML", ["t1.jpg", "t2.jpg"])
    recs = [(W.record("warcinfo", None, b"software: make_warc.py\r\n", "application/warc-fields",
                      version="warc/1.0"), None),
            (W.record("response", p10["url"], http(page_html(p10, '<meta charset="utf-8">').encode(), "text/html"),
                      "application/http; msgtype=response"), p10),
            (b"this is not a WARC record\r\njust garbage\r\n", "garbage"),
            (W.record("response", p11["url"], http(page_html(p11).encode(), HT, cenc="rawdeflate", eol=b"\n"),
                      "application/http; msgtype=response"), p11),
            (W.record("response", p12["url"], http(page_html(p12).encode(), "application/xhtml+xml"),
                      "application/http; msgtype=response", version="WARC/1.1"), p12)]
    off = 0
    with open(t2, "wb") as f:
        for data, pg in recs:
            if isinstance(pg, dict):
                pages.append((t2, off, pg))
            elif pg == "garbage":
                meta["warnings"].append(["t2.warc", f"unexpected data at offset {off}"])
            f.write(data)
            off += len(data)

    # ---- t3: one gzip stream; an image seen in t1; too many images --------
    t3 = os.path.join(outdir, "t3.warc.gz")
    p13 = simple("http://www.example.com/again.html", "Again", ["/shared/x.jpg", "/shared/y.jpg"])
    p13["images"].append(img(src="http://www.example.com/articles/img/car.jpg", alt="seen before"))
    p13["images"].append(img(src="http://www.example.com/photos/shared-later.jpg", alt="was too small"))
    p14 = simple("http://www.example.com/many.html", "Many", [f"many/{i}.jpg" for i in range(60)])
    stream = b""
    for pg in (p13, p14):
        stream += W.record("response", pg["url"], http(page_html(pg).encode(), HT),
                           "application/http; msgtype=response")
        pages.append((t3, 0, pg))
    with open(t3, "wb") as f:
        f.write(gz(stream))

    # ---- t4: ARC v1 --------------------------------------------------------
    t4 = os.path.join(outdir, "t4.arc")
    p15 = simple("http://www.example.net/arc.html", "From an ARC file", ["arc1.jpg", "arc2.jpg"])
    vb = b"1 0 Test\nURL IP-address Archive-date Content-type Archive-length\n\n"
    arc = [(b"filedesc://t4.arc 0.0.0.0 20240101000000 text/plain %d\n" % len(vb) + vb + b"\n", None)]
    body = http(page_html(p15).encode(), "text/html")
    arc.append((b"%s 93.184.216.34 20240101000000 text/html %d\n" % (p15["url"].encode(), len(body)) + body + b"\n", p15))
    gifb = http(b"GIF89a....", "image/gif")
    arc.append((b"http://www.example.net/arc1.jpg 93.184.216.34 20240101000000 image/gif %d\n" % len(gifb) + gifb + b"\n", None))
    dns = b"20240101000000\nwww.example.net. 300 IN A 93.184.216.34\n"
    arc.append((b"dns:www.example.net 1.1.1.1 20240101000000 text/dns %d\n" % len(dns) + dns + b"\n", None))
    off = 0
    with open(t4, "wb") as f:
        for data, pg in arc:
            if pg:
                pages.append((t4, off, pg))
            f.write(data)
            off += len(data)

    rules = copy.deepcopy(DEFAULT_RULES)
    exp = expected_pages(pages, rules)
    custom = dict(copy.deepcopy(DEFAULT_RULES), **CUSTOM_RULES)
    custom["min_images"] = 1
    exp_rules = expected_pages(pages, custom)
    with open(os.path.join(outdir, "rules.json"), "w") as f:
        json.dump(CUSTOM_RULES, f)
    for name, rows in (("expected.jsonl", exp), ("expected_rules.jsonl", exp_rules)):
        with open(os.path.join(outdir, name), "w") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    meta.update({"inputs": [t1, t2, t3, t4], "html_pages": len(pages),
                 "images_found": sum(len(p["images"]) for _, _, p in pages),
                 "brotli": brotli is not None})
    with open(os.path.join(outdir, "expected_meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{len(pages)} html pages, {len(exp)} expected pages, brotli case: "
          f"{'yes' if brotli else 'skipped (no python brotli)'}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    os.makedirs(sys.argv[1], exist_ok=True)
    build(sys.argv[1])
