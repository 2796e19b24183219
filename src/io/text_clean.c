/* text_clean.c - CLIP's text cleaning (ftfy.fix_text, html.unescape x2,
 * whitespace collapsing, str.lower), on arrays of code points.
 *
 * Every step works on a `cpbuf` and writes a fresh one, mirroring the Python
 * functions one to one so that each can be checked against its original.
 * Unicode data (categories, NFC/NFKC, simple case mapping) comes from
 * utf8proc; only the small fixed sets the Python code spells out itself
 * (ftfy's ligature list, cp1252's C1 block, the `\s` sets) are written here. */
#include "io/text_clean.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "io/html_entities.h"

typedef struct cpbuf {
    uint32_t *v;
    size_t n, cap;
} cpbuf;

static int cp_reserve(cpbuf *b, size_t extra) {
    if (b->n + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 16;
    while (cap < b->n + extra) cap *= 2;
    uint32_t *v = realloc(b->v, cap * sizeof *v);
    if (!v) return -1;
    b->v = v;
    b->cap = cap;
    return 0;
}

static int cp_push(cpbuf *b, uint32_t c) {
    if (cp_reserve(b, 1)) return -1;
    b->v[b->n++] = c;
    return 0;
}

static int cp_append(cpbuf *b, const uint32_t *c, size_t n) {
    if (n == 0) return 0; /* c may be NULL then */
    if (cp_reserve(b, n)) return -1;
    memcpy(b->v + b->n, c, n * sizeof *c);
    b->n += n;
    return 0;
}

/* Appends a UTF-8 string (from the generated entity table: always valid). */
static int cp_push_utf8(cpbuf *b, const char *s) {
    const uint8_t *p = (const uint8_t *)s;
    size_t len = strlen(s);
    while (len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p, (utf8proc_ssize_t)len, &c);
        if (k <= 0) return -1;
        if (cp_push(b, (uint32_t)c)) return -1;
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

static int cp_equal(const cpbuf *a, const cpbuf *b) {
    return a->n == b->n && (a->n == 0 || !memcmp(a->v, b->v, a->n * sizeof *a->v));
}

/* Moves `next` into `cur` (freeing cur's storage). */
static void cp_swap(cpbuf *cur, cpbuf *next) {
    free(cur->v);
    *cur = *next;
    memset(next, 0, sizeof *next);
}

size_t ml_utf8_encode(const uint32_t *cp, size_t n, char *buf) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += (size_t)utf8proc_encode_char((utf8proc_int32_t)cp[i], (utf8proc_uint8_t *)buf + k);
    return k;
}

static int decode_utf8(const char *s, size_t len, cpbuf *out, ml_error *err) {
    const uint8_t *p = (const uint8_t *)s;
    size_t off = 0;
    while (off < len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p + off, (utf8proc_ssize_t)(len - off), &c);
        if (k <= 0)
            return ml_fail(err, "text is not valid UTF-8 (bad byte 0x%02x at offset %zu)",
                           p[off], off);
        if (cp_push(out, (uint32_t)c)) return ml_fail(err, "out of memory cleaning text");
        off += (size_t)k;
    }
    return 0;
}

/* ---- character classes ------------------------------------------------ */

static int is_ascii_alnum(uint32_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_hex(uint32_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int is_digit(uint32_t c) { return c >= '0' && c <= '9'; }

/* The `regex` module's `\s` for str patterns (the White_Space property). */
static int is_regex_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Python's str.isspace() (used by str.strip): White_Space plus U+1C..U+1F. */
static int is_py_space(uint32_t c) { return is_regex_space(c) || (c >= 0x1C && c <= 0x1F); }

/* Windows-1252 for bytes 0x80..0x9F; the five undefined bytes map to
 * themselves, as in both html.unescape and ftfy's sloppy-windows-1252. */
static uint32_t cp1252_c1(uint32_t c) {
    static const uint16_t map[32] = {
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
        0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
        0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
        0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};
    return map[c - 0x80];
}

/* ---- HTML entities ---------------------------------------------------- */

static int entity_cmp(const void *key, const void *elem) {
    return strcmp((const char *)key, ((const ml_html_entity *)elem)->name);
}

static const char *entity_find(const ml_html_entity *tab, size_t n, const char *name) {
    const ml_html_entity *e = bsearch(name, tab, n, sizeof *tab, entity_cmp);
    return e ? e->value : NULL;
}

static const char *html5_find(const char *name) {
    return entity_find(ML_HTML5_ENTITIES, ML_HTML5_ENTITIES_COUNT, name);
}

/* html.unescape's numeric rule; appends the result (maybe nothing). */
static int push_charref(cpbuf *out, uint32_t num) {
    if (num == 0) return cp_push(out, 0xFFFD);
    if (num == 0x0D) return cp_push(out, 0x0D);
    if (num >= 0x80 && num <= 0x9F) return cp_push(out, cp1252_c1(num));
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return cp_push(out, 0xFFFD);
    /* _invalid_codepoints: controls, noncharacters -> removed */
    if ((num >= 0x01 && num <= 0x08) || num == 0x0B || (num >= 0x0E && num <= 0x1F) ||
        num == 0x7F || (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE)
        return 0;
    return cp_push(out, num);
}

/* Parses digits of v[i..n) in `base`, saturating above 0x10FFFF. */
static uint32_t parse_num(const uint32_t *v, size_t i, size_t end, int base) {
    uint64_t num = 0;
    for (; i < end; i++) {
        uint32_t c = v[i], d = is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
        num = num * (uint64_t)base + d;
        if (num > 0x110000) num = 0x110000;
    }
    return (uint32_t)num;
}

/* html.unescape's `&#...` alternatives at v[i] == '&', v[i+1] == '#'.
 * Returns the end of the match, or 0 when neither alternative matches. */
static size_t html_numeric(const uint32_t *v, size_t n, size_t i, cpbuf *out, int *fail) {
    size_t j = i + 2, start;
    int base = 10;
    if (j < n && is_digit(v[j])) {
        start = j;
        while (j < n && is_digit(v[j])) j++;
    } else if (j + 1 < n && (v[j] == 'x' || v[j] == 'X') && is_hex(v[j + 1])) {
        base = 16;
        start = ++j;
        while (j < n && is_hex(v[j])) j++;
    } else {
        return 0;
    }
    if (push_charref(out, parse_num(v, start, j, base))) *fail = 1;
    return (j < n && v[j] == ';') ? j + 1 : j;
}

static int is_name_char(uint32_t c) {
    return !(c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' ||
             c == '#' || c == ';');
}

/* html.unescape's named alternative at v[i] == '&': up to 32 name chars and
 * an optional ';', then the whole name or its longest known prefix (>= 2
 * chars; the no-semicolon legacy names).  Returns the end of the match. */
static size_t html_named(const uint32_t *v, size_t n, size_t i, cpbuf *out, int *fail) {
    size_t j = i + 1, len, ascii = 0;
    char name[40];
    while (j < n && j - (i + 1) < 32 && is_name_char(v[j])) j++;
    if (j == i + 1) return 0;
    if (j < n && v[j] == ';') j++;
    len = j - (i + 1);
    while (ascii < len && v[i + 1 + ascii] < 0x80) {
        name[ascii] = (char)v[i + 1 + ascii];
        ascii++;
    }
    for (size_t x = len; x >= 2; x--) {
        if (x > ascii) continue; /* names are ASCII */
        name[x] = '\0';
        const char *val = html5_find(name);
        if (val) {
            if (cp_push_utf8(out, val) || cp_append(out, v + i + 1 + x, len - x)) *fail = 1;
            return j;
        }
    }
    if (cp_append(out, v + i, j - i)) *fail = 1;
    return j;
}

/* Python's html.unescape. */
static int html_unescape(const cpbuf *in, cpbuf *out) {
    int fail = 0;
    size_t i = 0;
    while (i < in->n && !fail) {
        size_t end = 0;
        if (in->v[i] == '&') {
            if (i + 1 < in->n && in->v[i + 1] == '#')
                end = html_numeric(in->v, in->n, i, out, &fail);
            else
                end = html_named(in->v, in->n, i, out, &fail);
        }
        if (end) {
            i = end;
        } else if (cp_push(out, in->v[i++])) {
            fail = 1;
        }
    }
    return fail ? -1 : 0;
}

/* ftfy's `&#?[0-9A-Za-z]{1,24};`: returns the match end or 0. */
static size_t ftfy_entity_end(const uint32_t *v, size_t n, size_t i) {
    size_t j = i + 1, k = 0;
    if (j < n && v[j] == '#') j++;
    while (j + k < n && k < 25 && is_ascii_alnum(v[j + k])) k++;
    if (k < 1 || k > 24 || j + k >= n || v[j + k] != ';') return 0;
    return j + k + 1;
}

/* ftfy's _unescape_fixup for the match v[i..end). */
static int ftfy_entity(const uint32_t *v, size_t i, size_t end, cpbuf *out) {
    char name[32];
    size_t len = end - i - 1; /* without '&', with ';' */
    for (size_t k = 0; k < len; k++) name[k] = (char)v[i + 1 + k];
    name[len] = '\0';
    if (name[0] != '#') {
        const char *val = html5_find(name);
        if (!val) val = entity_find(ML_FTFY_UPPER_ENTITIES, ML_FTFY_UPPER_ENTITIES_COUNT, name);
        return val ? cp_push_utf8(out, val) : cp_append(out, v + i, end - i);
    }
    /* "&#...;": html.unescape must consume it all, and not yield ';' */
    cpbuf tmp = {0};
    int fail = 0;
    size_t mend = html_numeric(v, end, i, &tmp, &fail);
    int ok = !fail && mend == end && !(tmp.n == 1 && tmp.v[0] == ';');
    int rc = fail ? -1 : ok ? cp_append(out, tmp.v, tmp.n) : cp_append(out, v + i, end - i);
    free(tmp.v);
    return rc;
}

/* ftfy.fixes.unescape_html. */
static int ftfy_unescape_html(const cpbuf *in, cpbuf *out) {
    size_t i = 0;
    while (i < in->n) {
        size_t end = in->v[i] == '&' ? ftfy_entity_end(in->v, in->n, i) : 0;
        if (end) {
            if (ftfy_entity(in->v, i, end, out)) return -1;
            i = end;
        } else if (cp_push(out, in->v[i++])) {
            return -1;
        }
    }
    return 0;
}

/* ---- ftfy's character fixers ------------------------------------------ */

/* fix_latin_ligatures: ftfy's LIGATURES map (a fixed list of 22 entries). */
static int push_ligature(cpbuf *out, uint32_t c) {
    static const struct { uint32_t c; uint32_t to[3]; } lig[] = {
        {0x0132, {'I', 'J'}}, {0x0133, {'i', 'j'}}, {0x0149, {0x02BC, 'n'}},
        {0x01F1, {'D', 'Z'}}, {0x01F2, {'D', 'z'}}, {0x01F3, {'d', 'z'}},
        {0x01C4, {'D', 0x017D}}, {0x01C5, {'D', 0x017E}}, {0x01C6, {'d', 0x017E}},
        {0x01C7, {'L', 'J'}}, {0x01C8, {'L', 'j'}}, {0x01C9, {'l', 'j'}},
        {0x01CA, {'N', 'J'}}, {0x01CB, {'N', 'j'}}, {0x01CC, {'n', 'j'}},
        {0xFB00, {'f', 'f'}}, {0xFB01, {'f', 'i'}}, {0xFB02, {'f', 'l'}},
        {0xFB03, {'f', 'f', 'i'}}, {0xFB04, {'f', 'f', 'l'}}, {0xFB05, {0x017F, 't'}},
        {0xFB06, {'s', 't'}}};
    for (size_t k = 0; k < sizeof lig / sizeof lig[0]; k++) {
        if (lig[k].c != c) continue;
        size_t len = lig[k].to[2] ? 3 : 2;
        return cp_append(out, lig[k].to, len);
    }
    return cp_push(out, c);
}

/* Appends NFKC(c) (utf8proc) - fix_character_width's map for U+FF01..FFEF. */
static int push_nfkc(cpbuf *out, uint32_t c) {
    uint8_t in[8];
    utf8proc_uint8_t *res = NULL;
    utf8proc_ssize_t k = utf8proc_encode_char((utf8proc_int32_t)c, in);
    in[k] = 0;
    utf8proc_ssize_t m = utf8proc_map(in, k, &res,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    int rc = m < 0 ? cp_push(out, c) : cp_push_utf8(out, (const char *)res);
    free(res);
    return rc;
}

/* One code point through fix_c1_controls, fix_latin_ligatures and
 * fix_character_width; these are per-character maps, and each one's output
 * is left alone by the later ones (ASCII / composed / non-C1 results). */
static int push_char_fixes(cpbuf *out, uint32_t c) {
    if (c >= 0x80 && c <= 0x9F) return cp_push(out, cp1252_c1(c));
    if (c == 0x3000) return cp_push(out, ' ');
    if (c >= 0xFF01 && c <= 0xFFEF) return push_nfkc(out, c);
    return push_ligature(out, c);
}

/* uncurl_quotes then fix_line_breaks, also per character except CR LF. */
static int quotes_and_breaks(const cpbuf *in, cpbuf *out) {
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
        else if (c >= 0x201C && c <= 0x201F) c = '"';
        else if (c == '\r' && i + 1 < in->n && in->v[i + 1] == '\n') continue;
        else if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85) c = '\n';
        if (cp_push(out, c)) return -1;
    }
    return 0;
}

static int char_fixes(const cpbuf *in, cpbuf *out) {
    cpbuf mid = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n && !rc; i++) rc = push_char_fixes(&mid, in->v[i]);
    if (!rc) rc = quotes_and_breaks(&mid, out);
    free(mid.v);
    return rc;
}

/* remove_terminal_escapes: ESC '[' (\d|;)* [a-zA-Z], where Python's `\d`
 * is any Nd digit. */
static size_t terminal_escape_end(const uint32_t *v, size_t n, size_t i) {
    if (v[i] != 0x1B || i + 1 >= n || v[i + 1] != '[') return 0;
    size_t j = i + 2;
    while (j < n && (v[j] == ';' || utf8proc_category((utf8proc_int32_t)v[j]) ==
                                        UTF8PROC_CATEGORY_ND))
        j++;
    if (j < n && ((v[j] | 0x20) >= 'a' && (v[j] | 0x20) <= 'z')) return j + 1;
    return 0;
}

/* remove_control_chars: ftfy's CONTROL_CHARS ranges. */
static int is_ftfy_control(uint32_t c) {
    return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
           (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

static int escapes_and_controls(const cpbuf *in, cpbuf *out) {
    for (size_t i = 0; i < in->n; i++) {
        size_t end = terminal_escape_end(in->v, in->n, i);
        if (end) {
            i = end - 1;
            continue;
        }
        if (!is_ftfy_control(in->v[i]) && cp_push(out, in->v[i])) return -1;
    }
    return 0;
}

/* unicodedata.normalize("NFC") through utf8proc. */
static int nfc(const cpbuf *in, cpbuf *out) {
    char *buf = malloc(in->n * 4 + 1);
    if (!buf) return -1;
    size_t k = ml_utf8_encode(in->v, in->n, buf);
    buf[k] = '\0';
    utf8proc_uint8_t *res = NULL;
    utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)buf, (utf8proc_ssize_t)k, &res,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    free(buf);
    int rc = m < 0 ? -1 : cp_push_utf8(out, (const char *)res);
    free(res);
    return rc;
}

/* ---- mojibake (a subset of ftfy's fix_encoding) ------------------------- */

/* Encodes c as sloppy-windows-1252 (latin1=1: as latin-1); -1 if it can't. */
static int encode_8bit(uint32_t c, int latin1) {
    if (c < 0x80 || (c >= 0xA0 && c <= 0xFF) || (latin1 && c <= 0xFF)) return (int)c;
    if (latin1) return -1;
    for (uint32_t b = 0x80; b <= 0x9F; b++)
        if (cp1252_c1(b) == c) return (int)b;
    return -1;
}

/* Re-reads the text as UTF-8 that was decoded as latin-1 / windows-1252
 * ("cafÃ©" -> "café"), when every character encodes and the bytes are
 * valid UTF-8.  ftfy also weighs a "badness" score, tries six more code
 * pages, restores lost U+A0 bytes and fixes mixed segments; not done here. */
static int fix_utf8_mojibake(const cpbuf *in, cpbuf *out) {
    int non_ascii = 0;
    for (size_t i = 0; i < in->n; i++) non_ascii |= in->v[i] >= 0x80;
    char *bytes = non_ascii ? malloc(in->n + 1) : NULL;
    for (int latin1 = 1; bytes && latin1 >= 0; latin1--) {
        size_t i = 0;
        for (; i < in->n; i++) {
            int b = encode_8bit(in->v[i], latin1);
            if (b < 0 || b == 0xC0 || b == 0xED) break; /* C0/ED: utf-8-variants, not done */
            bytes[i] = (char)b;
        }
        if (i < in->n) continue;
        cpbuf dec = {0};
        ml_error e;
        if (decode_utf8(bytes, in->n, &dec, &e) == 0) {
            free(bytes);
            cp_swap(out, &dec);
            return 0;
        }
        free(dec.v);
    }
    free(bytes);
    return cp_append(out, in->v, in->n);
}

/* ---- ftfy.fix_text ------------------------------------------------------ */

typedef int (*fixer_fn)(const cpbuf *in, cpbuf *out);

/* Applies one fixer, replacing *text. */
static int apply(fixer_fn fn, cpbuf *text) {
    cpbuf next = {0};
    if (fn(text, &next)) {
        free(next.v);
        return -1;
    }
    cp_swap(text, &next);
    return 0;
}

/* ftfy.fix_and_explain on one segment: the fixers in ftfy's order, repeated
 * until the text stops changing.  fix_encoding is only partly done (see
 * fix_utf8_mojibake); fix_surrogates has nothing to do on valid UTF-8. */
static int fix_segment(cpbuf *seg, int unescape) {
    for (;;) {
        cpbuf orig = {0};
        if (cp_append(&orig, seg->v, seg->n)) return -1;
        int rc = (unescape ? apply(ftfy_unescape_html, seg) : 0) ||
                 apply(fix_utf8_mojibake, seg) || apply(char_fixes, seg) || apply(escapes_and_controls, seg) || apply(nfc, seg);
        int same = !rc && cp_equal(&orig, seg);
        free(orig.v);
        if (rc) return -1;
        if (same) return 0;
    }
}

/* ftfy.fix_text: segments end after each '\n'; once a segment contains '<',
 * HTML unescaping stays off for the rest of the text (ftfy rebinds config). */
static int fix_text(const cpbuf *in, cpbuf *out) {
    int unescape = 1;
    size_t pos = 0;
    while (pos < in->n) {
        size_t end = pos;
        while (end < in->n && in->v[end] != '\n') end++;
        if (end < in->n) end++;
        cpbuf seg = {0};
        if (cp_append(&seg, in->v + pos, end - pos)) return -1;
        for (size_t i = 0; i < seg.n; i++)
            if (seg.v[i] == '<') unescape = 0;
        int rc = fix_segment(&seg, unescape) || cp_append(out, seg.v, seg.n);
        free(seg.v);
        if (rc) return -1;
        pos = end;
    }
    return 0;
}

/* ---- whitespace and case -------------------------------------------------- */

/* str.strip(), then re.sub(r'\s+', ' '), then strip() again.  The first strip
 * only matters for U+1C..1F, which the regex does not treat as space. */
static int strip_and_collapse(const cpbuf *in, cpbuf *out) {
    size_t a = 0, b = in->n;
    while (a < b && is_py_space(in->v[a])) a++;
    while (b > a && is_py_space(in->v[b - 1])) b--;
    cpbuf mid = {0};
    int rc = 0;
    for (size_t i = a; i < b && !rc; i++) {
        if (!is_regex_space(in->v[i])) {
            rc = cp_push(&mid, in->v[i]);
            continue;
        }
        while (i + 1 < b && is_regex_space(in->v[i + 1])) i++;
        rc = cp_push(&mid, ' ');
    }
    a = 0;
    b = mid.n;
    while (a < b && is_py_space(mid.v[a])) a++;
    while (b > a && is_py_space(mid.v[b - 1])) b--;
    if (!rc && b > a) rc = cp_append(out, mid.v + a, b - a);
    free(mid.v);
    return rc;
}

/* Unicode Cased (approximated from utf8proc: cased letters, or anything with
 * a case mapping, e.g. circled letters and Roman numerals). */
static int is_cased(uint32_t c) {
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
           cat == UTF8PROC_CATEGORY_LT || utf8proc_tolower((utf8proc_int32_t)c) != (int32_t)c ||
           utf8proc_toupper((utf8proc_int32_t)c) != (int32_t)c;
}

/* Unicode Case_Ignorable: Mn Me Cf Lm Sk, plus the Word_Break MidLetter,
 * MidNumLet and Single_Quote characters. */
static int is_case_ignorable(uint32_t c) {
    static const uint32_t mid[] = {'\'', '.', ':', 0xB7, 0x387, 0x55F, 0x5F4, 0x2018, 0x2019,
                                   0x2024, 0x2027, 0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E,
                                   0xFF1A};
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    if (cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_ME ||
        cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_LM || cat == UTF8PROC_CATEGORY_SK)
        return 1;
    for (size_t k = 0; k < sizeof mid / sizeof mid[0]; k++)
        if (mid[k] == c) return 1;
    return 0;
}

/* Python's handle_capital_sigma: final form after a cased letter (skipping
 * case-ignorables) when no cased letter follows. */
static uint32_t lower_sigma(const uint32_t *v, size_t n, size_t i) {
    size_t j = i;
    while (j > 0 && is_case_ignorable(v[j - 1])) j--;
    if (j == 0 || !is_cased(v[j - 1])) return 0x3C3;
    j = i + 1;
    while (j < n && is_case_ignorable(v[j])) j++;
    return (j == n || !is_cased(v[j])) ? 0x3C2 : 0x3C3;
}

/* Python's str.lower(): utf8proc's simple mapping, plus the one
 * unconditional SpecialCasing entry (U+0130) and Final_Sigma. */
static int py_lower(const cpbuf *in, cpbuf *out) {
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->v[i];
        int rc;
        if (c == 0x130) {
            static const uint32_t idot[2] = {'i', 0x307};
            rc = cp_append(out, idot, 2);
        } else if (c == 0x3A3) {
            rc = cp_push(out, lower_sigma(in->v, in->n, i));
        } else {
            rc = cp_push(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)c));
        }
        if (rc) return -1;
    }
    return 0;
}

/* ---- entry points ------------------------------------------------------- */

int ml_text_clean_cp(const char *utf8, size_t len, uint32_t **out, size_t *n_out,
                     ml_error *err) {
    cpbuf text = {0};
    *out = NULL;
    *n_out = 0;
    if (decode_utf8(utf8, len, &text, err)) {
        free(text.v);
        return -1;
    }
    if (apply(fix_text, &text) || apply(html_unescape, &text) || apply(html_unescape, &text) ||
        apply(strip_and_collapse, &text) || apply(py_lower, &text) || cp_reserve(&text, 1)) {
        free(text.v);
        return ml_fail(err, "out of memory cleaning text");
    }
    *out = text.v;
    *n_out = text.n;
    return 0;
}

char *ml_text_clean(const char *utf8, size_t len, ml_error *err) {
    uint32_t *cp;
    size_t n;
    if (ml_text_clean_cp(utf8, len, &cp, &n, err)) return NULL;
    char *s = malloc(n * 4 + 1);
    if (!s) {
        free(cp);
        ml_fail(err, "out of memory cleaning text");
        return NULL;
    }
    s[ml_utf8_encode(cp, n, s)] = '\0';
    free(cp);
    return s;
}
