#!/usr/bin/python3
"""Loopback stand-in for an OpenAI-compatible chat endpoint (tests of
`magiclens mine instruct`).

  chat_server.py --port-file F --log LOG [--delay S] [--require-key KEY]

Listens on 127.0.0.1 (a free port, written to F via a rename once the socket
is bound, so a reader never sees a half-written number) and answers
POST .../chat/completions.  Every request is logged to LOG as one JSON line:
{"t", "path", "auth", "kind": "chat"|"vision", "case", "n", "status", "body"}.

Vision requests (a message content list with an image_url data URL) get the
caption "a photo with checksum XXXXXXXX" (first 8 hex digits of the SHA-256
of the decoded image bytes).

Chat requests are answered by the case named in the user messages
("case-NAME"; the last one found), n = how many requests that case has
had so far (1 = first):
  bad1     1: malformed JSON, then good     badjson  always malformed JSON
  leak     1: mentions "image 1", then good fenced   good, inside a ```json fence
  limited  1: 429 with Retry-After: 1, then good
  flaky    1: 500, then good                down     always 500
  long     always 30 words                  cyrillic always a Russian answer
  url      always copies a URL
  anything else: good.
The good answer for case NAME is {"instruction": "show the NAME variant of
this item"}.  --require-key: 401 unless "Authorization: Bearer KEY".
"""
import argparse
import base64
import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
COUNTS = {}


def good(case):
    return json.dumps({'instruction': 'show the %s variant of this item' % case})


def chat_answer(case, n):
    """(status, content or None, extra headers)."""
    if case == 'bad1' and n == 1 or case == 'badjson':
        return 200, '{"instruction": "show the same thing', {}
    if case == 'leak' and n == 1:
        return 200, json.dumps({'instruction': 'show image 1 but in another colour'}), {}
    if case == 'fenced':
        return 200, '```json\n' + good(case) + '\n```', {}
    if case == 'limited' and n == 1:
        return 429, None, {'Retry-After': '1'}
    if case == 'flaky' and n == 1 or case == 'down':
        return 500, None, {}
    if case == 'long':
        return 200, json.dumps({'instruction': ' '.join(['word'] * 30)}), {}
    if case == 'cyrillic':
        return 200, json.dumps({'instruction': 'покажи ту же самую обувь в красном цвете'}), {}
    if case == 'url':
        return 200, json.dumps({'instruction': 'show the one from https://shop.example/item'}), {}
    return 200, good(case), {}


def find_case(messages):
    found = None
    for m in messages:
        if m.get('role') == 'user' and isinstance(m.get('content'), str):
            hits = re.findall(r'case-(\w+)', m['content'])
            if hits:
                found = hits[-1]
    return found


def image_of(messages):
    for m in messages:
        c = m.get('content')
        if isinstance(c, list):
            for part in c:
                if part.get('type') == 'image_url':
                    url = part['image_url']['url']
                    return base64.b64decode(url.split(',', 1)[1])
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def setup(self):
        super().setup()
        # headers and body go out in two writes: without this, Nagle's
        # algorithm holds the body until the client's delayed ACK (40 ms)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # quiet
        pass

    def reply(self, status, obj, headers):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        cfg = self.server.cfg
        n = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(n)
        auth = self.headers.get('Authorization')
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        rec = {'t': time.time(), 'path': self.path, 'auth': auth, 'body': body}
        if cfg.delay:
            time.sleep(cfg.delay)
        status, content, headers = 404, None, {}
        if body is None:
            status = 400
        elif cfg.require_key and auth != 'Bearer ' + cfg.require_key:
            status = 401
        elif self.path.endswith('/chat/completions'):
            img = image_of(body.get('messages', []))
            if img is not None:
                rec['kind'] = 'vision'
                status = 200
                content = 'a photo with checksum ' + hashlib.sha256(img).hexdigest()[:8]
            else:
                rec['kind'] = 'chat'
                case = find_case(body.get('messages', [])) or 'none'
                with LOCK:
                    COUNTS[case] = COUNTS.get(case, 0) + 1
                    k = COUNTS[case]
                rec['case'], rec['n'] = case, k
                status, content, headers = chat_answer(case, k)
        rec['status'] = status
        with LOCK:
            with open(cfg.log, 'a') as f:
                f.write(json.dumps(rec) + '\n')
        if status == 200:
            self.reply(200, {'id': 'x', 'object': 'chat.completion', 'model': body.get('model'),
                             'choices': [{'index': 0, 'finish_reason': 'stop',
                                          'message': {'role': 'assistant', 'content': content}}]},
                       headers)
        else:
            self.reply(status, {'error': {'message': 'status %d' % status}}, headers)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # a client killed mid-request (the kill -9 test) is expected
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--port-file', required=True)
    ap.add_argument('--log', required=True)
    ap.add_argument('--delay', type=float, default=0.0)
    ap.add_argument('--require-key')
    cfg = ap.parse_args()
    srv = Server(('127.0.0.1', 0), Handler)
    srv.cfg = cfg
    open(cfg.log, 'a').close()
    tmp = cfg.port_file + '.tmp'
    with open(tmp, 'w') as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, cfg.port_file)
    srv.serve_forever()


if __name__ == '__main__':
    main()
