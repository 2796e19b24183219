#!/usr/bin/env python3
"""Writes tests/data/tokenizer/expected.jsonl(.gz) with the OFFICIAL CLIP tokenizer.

Not run by the test suite; rerun it when the text list changes.  Needs the
official code outside this repository, on PYTHONPATH:
  - clip/simple_tokenizer.py from github.com/openai/CLIP (with
    bpe_simple_vocab_16e6.txt.gz next to it, or pass --vocab),
  - ftfy from github.com/rspeer/python-ftfy (6.3.1 was used),
  - the `regex` module (python3-regex).
ftfy imports `wcwidth` only for its display helpers; a stub with wcwidth() and
wcswidth() is enough if the package is missing.

  PYTHONPATH=/tmp/official:/tmp/stubs /usr/bin/python3 \\
      tests/reference/gen_tokenizer_ids.py --shared ../shared | gzip -9n > tests/data/tokenizer/expected.jsonl.gz

Output, one JSON object a line.  The first line is {"meta": {...}}.  Then
{"set": S, "text": T, "ids": [...]} where S is circo/fashioniq/cirr/genecis/
dtin/hard and ids are the tokens between SOT and EOT of the sequence scenic
builds (SOT=49406 before them, EOT=49407 after them, then zeros up to 77 are
implied, to keep the file small).  A text over 77 tokens gets
"error": "too long", "n_tokens": its full length with SOT and EOT, and ids =
the tokens of the truncated sequence (its first 75 tokens).
"""
import argparse
import json
import os
import sys

import ftfy
from clip.simple_tokenizer import SimpleTokenizer

CONTEXT = 77


def benchmark_texts(shared):
    b = os.path.join(shared, 'benchmarks')

    def load(*p):
        with open(os.path.join(b, *p), encoding='utf-8') as f:
            return json.load(f)

    for split in ('val', 'test'):
        for q in load('circo', split + '.json'):
            yield 'circo', f"find {q['shared_concept']} but {q['relative_caption']}"
    for cat in ('dress', 'shirt', 'toptee'):
        for q in load('fashioniq', f'cap.{cat}.val.json'):
            yield 'fashioniq', ' and '.join(q['captions'])
    for split in ('val', 'test1'):
        for q in load('cirr', f'cap.rc2.{split}.json'):
            yield 'cirr', q['caption']
    for task in ('change_object', 'focus_object'):
        for q in load('genecis', task + '.json'):
            yield 'genecis', q['condition']
    for domain in ('cartoon', 'origami', 'toy', 'sculpture'):
        yield 'dtin', f'find this object in {domain}'


LONG = ('a photo of a dog sitting on a red couch next to a window with the sun shining '
        'through the curtains and a cat sleeping on the floor ' * 3)

HARD = [
    '', ' ', '   \t\n  ', '\u3000', '\xa0', 'hello', 'Hello, World!', 'wow!"$', '!', '!!!',
    'a!b', '"quoted"', "it's", "they'll", "I'D", "we've", "you're", "I'm", "don't",
    "IT'S", "'s", "''s", "it\u2019s", "it\u02bcs", "it'\u017f", "rock'n'roll", "o'clock",
    '3.14', '1,000', '1000000', '\u0661\u0662\u0663', '\u00bd', '\u2162', 'x\u00b2',
    '\u2460', 'abc123def', 'caf\u00e9', 'cafe\u0301', 'CAF\u00c9', 'CAFE\u0301',
    'na\u00efve', 'r\u00e9sum\u00e9', '\u00c5ngstr\u00f6m', 'A\u030a', '\u212b',
    '\u1e9b\u0323', 'e\u0308\u0301', '\U0001F600', '\U0001F44D\U0001F3FD',
    '\U0001F468\u200d\U0001F469\u200d\U0001F467', '\U0001F1EF\U0001F1F5', '\u2764\ufe0f',
    'i \u2764 nyc', '\U0001F3F4\U000E0067\U000E0062\U000E0077\U000E006C\U000E0073\U000E007F',
    '\u65e5\u672c\u8a9e', '\u4e2d\u6587\u6d4b\u8bd5', '\ud55c\uad6d\uc5b4',
    '\u30ab\u30bf\u30ab\u30ca', '\uff76\uff80\uff76\uff85', '\uff76\uff9e',
    '\u0645\u0631\u062d\u0628\u0627', '\u05e9\u05dc\u05d5\u05dd', '\u0928\u092e\u0938\u094d\u0924\u0947',
    '\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35', '\u041f\u0440\u0438\u0432\u0435\u0442',
    '\u201chello\u201d', '\u2018hi\u2019', '\u201ehallo\u201c', '\u201b\u201f',
    '\u00abbonjour\u00bb', '\ufb01sh', '\ufb02ower', '\ufb00', '\ufb03', '\ufb04',
    '\ufb05', '\ufb06', '\u0133', '\u0132', '\u01c4', '\u01c6', '\u01c9', '\u0149',
    '\uff21\uff22\uff23\uff11\uff12\uff13', '\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33',
    '\uff01\uff1f', '\uffe5100', '\uffe0',
    '&amp;', '&amp;amp;', '&amp;amp;amp;', 'AT&amp;T', 'AT&T', '&eacute;', '&eacute',
    'caf&eacute', '&EACUTE;', 'P&EACUTE;REZ', 'BUNDESSTRA&SZLIG;E', '&nTILDE;', '&#x27;',
    '&#39;', '&#X41;', '&#65', '&#0;', '&#128;', '&#x80;', '&#150;', '&#x110000;',
    '&#xD800;', '&#59;', '&#1;', '&#x1F600;', '&nbsp;', 'a&nbsp;b', '&lt;tag&gt;',
    '<b>&amp;</b>', 'x < y &amp; z', 'x &lt; y', 'line1\n<p>\n&amp;', '&amp;\n<',
    '&notit;', '&notin;', 'this&not that', '&ampersand', '&copy2024', '&hellip;',
    '&#x2019;s', '&unknown;', '&;', '&#;', '&#x;', '&#xZZ;', '&#12ab;', '&Jscr;',
    '&checkmark;', '&' + 'a' * 40 + ';', '&amp' + 'x' * 40, 'a\tb', 'a\nb', 'a\r\nb',
    'a\rb', 'a\x0bb', 'a\x0cb', 'a\x00b', 'a\x07b', 'a\x1bb', '\x1b[31mred\x1b[0m',
    '\x1b[1;32mbold', 'a\x7fb', 'a\x85b', 'a\x80b', 'a\x81b', 'a\x92s', 'a\x9fb',
    'a\u2028b', 'a\u2029b', 'a\u200bb', 'a\u200db', 'a\u2060b', 'a\ufeffb', '\ufeffbom',
    'a\u206ab', 'a\ufffcb', 'a\ufffdb', 'a\u1680b', 'a\u2003b', 'a\u202fb', 'a\x1cb',
    '\x1c\x1d', 'a\u00a0\u00a0b', '  lots   of    space  ', 'ISTANBUL \u0130stanbul',
    '\u0130', 'I\u0307', '\u0131', 'TITLE \u01c5', '\u039f\u0394\u039f\u03a3',
    '\u039f\u0394\u039f\u03a3 \u03a3\u039f\u03a6\u039f\u03a3', '\u03a3',
    '\u03a3\u03a3', 'A\u03a3', 'A\u03a3B', 'A\u03a3.', "A\u03a3'", 'A\u0301\u03a3',
    'stra\u00dfe', 'STRASSE', '\u1e9e', 'GROSS\u1e9e', '\u0345', '\u03b1\u0345',
    'a\u0345b', '\u212a', '\u2126', '\u00b5', '\u1f88', '\u01c5x', 'caf\u00c3\u00a9',
    'Ã©', 'sÃ³', 'â€œquotedâ€\x9d', 'voil\u00c3\xa0', 'Ã la mode',
    '<|endoftext|>', 'a <|endoftext|> b', '<|startoftext|>', 'x<|endoftext|>y',
    '!<|endoftext|>', '<|ENDOFTEXT|>', '<|\u017ftartoftext|>', '<|endoftext|',
    'http://example.com/a?b=c&d=e', 'user@example.com', '#hashtag @mention',
    '$100.00', '50%', '(parens) [brackets] {braces}', '...', '\u2026', '--', '\u2014',
    '\u2013', 'a/b\\c', '~`^', '\u00a9\u00ae\u2122', '\u00b0C', '\u20ac5',
    'supercalifragilisticexpialidocious', 'pneumonoultramicroscopicsilicovolcanoconiosis',
    'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
    'x' * 300, '! ' * 40, 'ab ' * 75, 'ab ' * 74, LONG, LONG + '\u00e9', '1 ' * 80,
    '\U0001F600' * 30, 'The QUICK brown FOX', 'MiXeD CaSe', "Can't won't shan't",
    'find a dog but make it blue', '\u00c3\u0192\u00c2\u00a9', '\u00c3\u0153ber',
    '\u00d0\u00bf\u00d1\u20ac\u00d0\u00b8\u00d0\u00b2\u00d0\u00b5\u00d1\u201a', '\u00c2\u00a35',
    '\u00c3', '\u00c2\u00c2', '\u00e9\u00b9', 'na\u00efve caf\u00e9 \u00e0 la cr\u00e8me', 'find this object in origami',
]


def encode(tok, text):
    ids = [49406] + tok.encode(text) + [49407]
    rec = {}
    if len(ids) > CONTEXT:
        rec = {'error': 'too long', 'n_tokens': len(ids)}
        ids = ids[:CONTEXT]
        ids[-1] = 49407
    rec['ids'] = ids[1:-1]  # SOT and EOT are implied
    return rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--shared', default='../shared')
    ap.add_argument('--vocab', default=None)
    args = ap.parse_args()
    tok = SimpleTokenizer(args.vocab) if args.vocab else SimpleTokenizer()
    meta = {'ftfy': ftfy.__version__, 'python': sys.version.split()[0],
            'note': 'ids are the tokens between SOT and EOT; zero padding to 77 implied'}
    print(json.dumps({'meta': meta}))
    seen = set()
    items = list(benchmark_texts(args.shared)) + [('hard', t) for t in HARD]
    for kind, text in items:
        if text in seen:
            continue
        seen.add(text)
        rec = {'set': kind, 'text': text}
        rec.update(encode(tok, text))
        print(json.dumps(rec, ensure_ascii=False, separators=(',', ':')))


if __name__ == '__main__':
    main()
