#!/usr/bin/env python3
"""API tests for `magiclens serve` (run by tests/t_serve.sh against a running server).

usage: serve_api.py MAGICLENS MODEL INDEX IMGDIR PORT TOKEN SERVER_PID

Checks: search results equal `magiclens search --json` for the same query (JSON,
multipart and base64 forms; image, image+text, text-only, image_id; k, offset,
min_score); embed equals `magiclens embed`; images and thumbnails only for indexed
ids; every malformed request gets the right 4xx and the server keeps serving;
admin endpoints need the token; reload and add work; a burst gets 200 or 503 only.
"""
import base64, http.client, json, os, signal, socket, subprocess, sys, threading

BIN, MODEL, INDEX, IMG, PORT, TOKEN, PID = sys.argv[1:8]
PORT, PID = int(PORT), int(PID)
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def request(method, path, body=None, headers=None, timeout=60):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r.getheader("Content-Type", ""), data


def post_json(path, obj, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return request("POST", path, json.dumps(obj).encode(), h)


def multipart(fields, boundary="XbOuNdArYx"):
    out = b""
    for name, value, filename in fields:
        out += b"--" + boundary.encode() + b"\r\n"
        disp = 'form-data; name="%s"' % name
        if filename:
            disp += '; filename="%s"' % filename
        out += b"Content-Disposition: " + disp.encode() + b"\r\n"
        if filename:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + value + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return out, {"Content-Type": "multipart/form-data; boundary=" + boundary}


def post_form(path, fields):
    body, h = multipart(fields)
    return request("POST", path, body, h)


def healthy(after):
    st, _, data = request("GET", "/healthz")
    check(st == 200 and json.loads(data)["status"] == "ok", "still serving after " + after)


def cli_search(args):
    out = subprocess.run([BIN, "search", "--index", INDEX, "--model", MODEL, "--json"] + args,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["results"]


def api_results(st, data, what):
    check(st == 200, what + ": HTTP 200 (got %d: %s)" % (st, data[:200]))
    return json.loads(data)["results"] if st == 200 else None


def expect_status(st, data, want, what):
    ok = st == want
    if ok and data:
        j = json.loads(data)
        ok = j.get("status") == want and isinstance(j.get("error"), str) and j["error"]
    check(ok, "%s -> %d (got %d: %s)" % (what, want, st, data[:160]))


def read(name):
    with open(os.path.join(IMG, name), "rb") as f:
        return f.read()


def test_parity():
    img = os.path.join(IMG, "gif_basic.gif")
    cases = [
        ("image+text, multipart", ["--image", img, "--text", "inside view", "-k", "5"],
         lambda: post_form("/api/search", [("image", read("gif_basic.gif"), "q.gif"),
                                           ("text", b"inside view", None), ("k", b"5", None)])),
        ("image+text, base64 JSON", ["--image", img, "--text", "inside view", "-k", "5"],
         lambda: post_json("/api/search", {"image": base64.b64encode(read("gif_basic.gif")).decode(),
                                           "text": "inside view", "k": 5})),
        ("image only, offset", ["--image", img, "-k", "4", "--offset", "3"],
         lambda: post_form("/api/search", [("image", read("gif_basic.gif"), "q.gif"),
                                           ("k", b"4", None), ("offset", b"3", None)])),
        ("text only", ["--text", "a photo of a red object", "-k", "7"],
         lambda: post_json("/api/search", {"text": "a photo of a red object", "k": 7})),
        ("text only, min_score", ["--text", "a dog", "-k", "50", "--min-score", "0.05"],
         lambda: post_json("/api/search", {"text": "a dog", "k": 50, "min_score": 0.05})),
    ]
    first = json.loads(post_json("/api/search", {"text": "x", "k": 1})[2])["results"][0]["id"]
    cases.append(("image_id + text", ["--like", str(first), "--text", "at night", "-k", "6"],
                  lambda: post_json("/api/search", {"image_id": first, "text": "at night", "k": 6})))
    cases.append(("image_id form", ["--like", str(first), "-k", "6"],
                  lambda: post_form("/api/search", [("image_id", str(first).encode(), None),
                                                    ("k", b"6", None), ("text", b"", None)])))
    for what, args, call in cases:
        want = cli_search(args)
        st, ct, data = call()
        got = api_results(st, data, what)
        check(got == want and len(want) > 0, what + ": results equal `magiclens search`")
        check(ct.startswith("application/json"), what + ": JSON content type")


def test_embed():
    out = subprocess.run([BIN, "embed", "--model", MODEL, "--image", os.path.join(IMG, "gif_basic.gif"),
                          "--text", "inside view"], check=True, capture_output=True, text=True).stdout
    want = json.loads(out)["embedding"]
    st, _, data = post_form("/api/embed", [("image", read("gif_basic.gif"), "q.gif"),
                                           ("text", b"inside view", None)])
    got = json.loads(data).get("embedding") if st == 200 else None
    check(got is not None and len(got) == len(want) and
          max(abs(a - b) for a, b in zip(got, want)) < 1e-6, "embed equals `magiclens embed`")


def test_images():
    res = json.loads(post_json("/api/search", {"text": "x", "k": 3})[2])["results"]
    r = res[0]
    st, ct, data = request("GET", "/api/images/%d" % r["id"])
    with open(r["path"], "rb") as f:
        check(st == 200 and data == f.read(), "GET /api/images/ID returns the indexed file's bytes")
    st, ct, data = request("GET", "/api/thumbs/%d" % r["id"])
    check(st == 200 and ct == "image/jpeg" and data[:3] == b"\xff\xd8\xff", "thumbnail is a JPEG")
    for bad, want in [("../../etc/passwd", 400), ("..%2F..%2Fetc%2Fpasswd", 400), ("%2e%2e", 400),
                      ("-1", 400), ("1e3", 400), ("", 400), ("99999999", 404),
                      ("12345678901234567890", 400), ("/etc/passwd", 400)]:
        st, _, data = request("GET", "/api/images/" + bad)
        expect_status(st, data, want, "GET /api/images/" + bad)
        st, _, data = request("GET", "/api/thumbs/" + bad)
        expect_status(st, data, want, "GET /api/thumbs/" + bad)
    # libmicrohttpd decodes %00 and the URL ends there: "1" is looked up as an id.
    st, _, data = request("GET", "/api/images/999999%00/../../etc/passwd")
    expect_status(st, data, 404, "GET /api/images/999999%00/../../etc/passwd")
    healthy("path traversal attempts")


def raw(data, timeout=30):
    """Sends raw bytes, returns the status code of the reply (0 if none)."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=timeout)
    try:
        s.sendall(data)
    except OSError:
        pass
    buf = b""
    try:
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    except OSError:
        pass
    s.close()
    parts = buf.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def test_bad_requests():
    gif = read("gif_basic.gif")
    cases = [
        ("wrong content type", lambda: request("POST", "/api/search", b"text=x", {"Content-Type": "text/plain"}), 415),
        ("no content type", lambda: request("POST", "/api/search", b"{}"), 415),
        ("form-urlencoded", lambda: request("POST", "/api/search", b"text=x",
                                            {"Content-Type": "application/x-www-form-urlencoded"}), 415),
        ("multipart without boundary", lambda: request("POST", "/api/search", b"--x\r\n",
                                                       {"Content-Type": "multipart/form-data"}), 400),
        ("multipart garbage", lambda: request("POST", "/api/search", b"\x00\x01garbage" * 50,
                                              {"Content-Type": "multipart/form-data; boundary=zz"}), 400),
        ("multipart cut off", lambda: request("POST", "/api/search", multipart([("image", gif, "a.gif")])[0][:200],
                                              multipart([])[1]), 400),
        ("invalid JSON", lambda: request("POST", "/api/search", b"{\"text\": ", {"Content-Type": "application/json"}), 400),
        ("JSON not an object", lambda: post_json("/api/search", [1, 2]), 400),
        ("invalid UTF-8 in JSON", lambda: request("POST", "/api/search", b'{"text": "a\xff\xfeb"}',
                                                  {"Content-Type": "application/json"}), 400),
        ("invalid UTF-8 in form", lambda: post_form("/api/search", [("text", b"caf\xc3\x28", None)]), 400),
        ("overlong UTF-8 in form", lambda: post_form("/api/search", [("text", b"\xc0\xaf", None)]), 400),
        ("NUL in form text", lambda: post_form("/api/search", [("text", b"a\x00b", None)]), 400),
        ("empty query", lambda: post_json("/api/search", {}), 400),
        ("k = 0", lambda: post_json("/api/search", {"text": "x", "k": 0}), 400),
        ("k not a number", lambda: post_form("/api/search", [("text", b"x", None), ("k", b"ten", None)]), 400),
        ("k string in JSON", lambda: post_json("/api/search", {"text": "x", "k": "10"}), 400),
        ("huge offset", lambda: post_json("/api/search", {"text": "x", "offset": 10 ** 12}), 400),
        ("min_score out of range", lambda: post_json("/api/search", {"text": "x", "min_score": 7}), 400),
        ("image and image_id", lambda: post_json("/api/search", {"image_id": 1, "image": "AAAA"}), 400),
        ("bad base64", lambda: post_json("/api/search", {"image": "!!!not base64"}), 400),
        ("unknown image_id", lambda: post_json("/api/search", {"image_id": 99999999}), 404),
        ("broken image", lambda: post_form("/api/search", [("image", b"GIF89a\x01\x00garbage", "b.gif")]), 400),
        ("truncated JPEG", lambda: post_form("/api/search", [("image", read("bad_truncated.jpg"), "b.jpg")]), 400),
        ("random bytes image", lambda: post_json("/api/search", {"image": base64.b64encode(os.urandom(3000)).decode()}), 400),
        ("decompression bomb", lambda: post_form("/api/search", [("image", read("bad_bomb.png"), "b.png")]), 413),
        ("text over the byte limit", lambda: post_json("/api/search", {"text": "a" * 5000}), 413),
        ("text over 77 tokens", lambda: post_json("/api/search", {"text": "cat " * 100}), 400),
        ("upload over the limit", lambda: post_form("/api/search", [("image", b"\xff" * (1100 * 1024), "b.jpg")]), 413),
        ("unknown route", lambda: request("GET", "/api/nothing"), 404),
        ("GET on a POST route", lambda: request("GET", "/api/search"), 405),
        ("POST on a GET route", lambda: request("POST", "/healthz", b"", {"Content-Type": "application/json"}), 405),
        ("reload without token", lambda: request("POST", "/api/admin/reload"), 401),
        ("reload with a wrong token", lambda: request("POST", "/api/admin/reload", b"",
                                                      {"Authorization": "Bearer wrong-token"}), 401),
        ("add without token", lambda: post_json("/api/admin/add", {"paths": ["/etc/passwd"]}), 401),
        ("add, bad body", lambda: post_json("/api/admin/add", {"paths": "x"},
                                            {"Authorization": "Bearer " + TOKEN}), 400),
    ]
    for what, call, want in cases:
        st, _, data = call()
        expect_status(st, data, want, what)
        healthy(what)
    # Bodies refused from their headers, and a body larger than the limit sent chunked.
    st = raw(b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100000000000\r\n\r\n{")
    check(st == 413, "Content-Length 100 GB -> 413 (got %d)" % st)
    chunk = b"a" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(40)) + b"0\r\n\r\n"
    st = raw(b"POST /api/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n" + body)
    check(st == 413, "chunked body over the limit -> 413 (got %d)" % st)
    st = raw(b"GARBAGE\r\n\r\n")
    check(st == 400 or st == 0, "garbage request line is refused (got %d)" % st)
    healthy("raw malformed requests")


def test_admin():
    auth = {"Authorization": "Bearer " + TOKEN}
    st, _, data = request("POST", "/api/admin/reload", b"", auth)
    check(st == 200 and json.loads(data)["status"] == "reloaded", "reload with the token")
    n0 = json.loads(request("GET", "/healthz")[2])["items"]
    new = os.path.join(os.path.dirname(IMG), "extra", "new.png")
    st, _, data = post_json("/api/admin/add", {"paths": [new]}, auth)
    check(st == 200 and json.loads(data)["added"] == 1, "add with the token (%d %s)" % (st, data[:200]))
    n1 = json.loads(request("GET", "/healthz")[2])["items"]
    check(n1 == n0 + 1, "the added image is served (%d -> %d items)" % (n0, n1))
    want = cli_search(["--image", new, "-k", "3"])
    st, _, data = post_form("/api/search", [("image", open(new, "rb").read(), "n.png"), ("k", b"3", None)])
    check(api_results(st, data, "search after add") == want, "after add, results equal `magiclens search`")
    check(want and want[0]["path"] == new, "the added image is its own best match")


def burst(n, body):
    statuses = []
    def one():
        try:
            statuses.append(post_json("/api/search", body)[0])
        except Exception as e:  # a refused connection would be a failure too
            statuses.append(str(e))
    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return statuses


def test_concurrency():
    body = {"image": base64.b64encode(read("gif_basic.gif")).decode(), "text": "inside", "k": 5}
    st = burst(48, body)
    check(all(s in (200, 503) for s in st), "a burst of 48 gets only 200 or 503 (%s)" %
          sorted(set(map(str, st))))
    # SIGHUP in the middle of a burst: nothing is dropped.
    result = []
    t = threading.Thread(target=lambda: result.extend(burst(24, {"text": "x", "k": 3})))
    t.start()
    os.kill(PID, signal.SIGHUP)
    t.join()
    check(all(s in (200, 503) for s in result) and result.count(200) > 0,
          "requests during a SIGHUP reload succeed (%s)" % sorted(set(map(str, result))))
    healthy("burst and reload")


def test_metrics():
    st, ct, data = request("GET", "/metrics")
    text = data.decode()
    check(st == 200 and ct.startswith("text/plain"), "metrics is text/plain")
    for key in ["magiclens_requests_total{route=\"search\",code=\"200\"}", "magiclens_queue_length",
                "magiclens_index_items", "magiclens_request_duration_seconds_bucket",
                "magiclens_reloads_total{result=\"ok\"}", "code=\"413\"", "code=\"400\""]:
        check(key in text, "metrics has " + key)


def test_page():
    st, ct, data = request("GET", "/")
    check(st == 200 and ct.startswith("text/html") and b"/app.js" in data, "GET / is the web page")
    st, ct, _ = request("GET", "/app.js")
    check(st == 200 and "javascript" in ct, "GET /app.js")


for t in [test_parity, test_embed, test_images, test_bad_requests, test_admin, test_concurrency,
          test_metrics, test_page]:
    print("--", t.__name__)
    t()
print("%d failures" % len(failures))
sys.exit(1 if failures else 0)
