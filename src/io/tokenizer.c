/* tokenizer.c - CLIP BPE tokenizer matching clip/simple_tokenizer.py.
 *
 * Symbols are vocabulary ids rather than strings: byte b starts as the id
 * of its bytes_to_unicode character (the last byte of a piece as the
 * "</w>" variant, id + 256), and a merge (a, b) of rank r is looked up in a
 * hash table of id pairs.  Ids are resolved through the vocabulary strings
 * once at load time, so "later duplicate wins" dict semantics carry over. */
#include "io/tokenizer.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include <zlib.h>

#include "core/error.h"
#include "io/text_clean.h"

#define N_MERGES (49152 - 256 - 2)   /* lines[1 : 49152-256-2+1] */
#define PAIR_SLOTS (1u << 17)        /* power of two, > 2 * N_MERGES */
#define STR_SLOTS (1u << 17)         /* power of two, > 2 * ML_VOCAB_SIZE */
#define MAX_VOCAB_BYTES (64u << 20)  /* refuse gzip bombs */
#define VOCAB_URL "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz"

typedef struct pair_slot {
    uint64_t key; /* (a << 32 | b) + 1; 0 = empty */
    int32_t rank, result;
} pair_slot;

struct ml_tokenizer {
    int32_t byte_id[256]; /* byte -> id of its bytes_to_unicode symbol */
    pair_slot *pairs;     /* PAIR_SLOTS entries */
};

/* ---- bytes_to_unicode ------------------------------------------------------ */

/* Fills order[i] = the byte whose symbol has id i, and chars[i] its char. */
static void bytes_to_unicode(uint8_t order[256], uint32_t chars[256]) {
    int n = 0, extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        if (printable) {
            order[n] = (uint8_t)b;
            chars[n++] = (uint32_t)b;
        }
    }
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        if (!printable) {
            order[n] = (uint8_t)b;
            chars[n++] = 256u + (uint32_t)extra++;
        }
    }
}

/* ---- string -> id table (load time only) --------------------------------- */

typedef struct str_table {
    const char **key; /* NUL-terminated, owned by the arena */
    int32_t *id;
} str_table;

static uint32_t fnv1a(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* Inserts or overwrites (a later duplicate wins, like dict(zip(vocab, ids))). */
static void str_put(str_table *t, const char *s, int32_t id) {
    uint32_t i = fnv1a(s, strlen(s)) & (STR_SLOTS - 1);
    while (t->key[i] && strcmp(t->key[i], s)) i = (i + 1) & (STR_SLOTS - 1);
    t->key[i] = s;
    t->id[i] = id;
}

static int32_t str_get(const str_table *t, const char *s, size_t n) {
    uint32_t i = fnv1a(s, n) & (STR_SLOTS - 1);
    while (t->key[i]) {
        if (!strncmp(t->key[i], s, n) && t->key[i][n] == '\0') return t->id[i];
        i = (i + 1) & (STR_SLOTS - 1);
    }
    return -1;
}

/* ---- pair table ------------------------------------------------------------ */

static uint32_t pair_hash(uint64_t key) {
    key *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(key >> 40) & (PAIR_SLOTS - 1);
}

static void pair_put(pair_slot *tab, int32_t a, int32_t b, int32_t rank, int32_t result) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint32_t i = pair_hash(key);
    while (tab[i].key && tab[i].key != key) i = (i + 1) & (PAIR_SLOTS - 1);
    tab[i].key = key;
    tab[i].rank = rank;
    tab[i].result = result;
}

static const pair_slot *pair_get(const pair_slot *tab, int32_t a, int32_t b) {
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint32_t i = pair_hash(key);
    while (tab[i].key) {
        if (tab[i].key == key) return &tab[i];
        i = (i + 1) & (PAIR_SLOTS - 1);
    }
    return NULL;
}

/* ---- loading ------------------------------------------------------------- */

/* Inflates a gzip stream into a malloc'd, NUL-terminated buffer. */
static char *gunzip(const uint8_t *data, size_t len, size_t *out_len, ml_error *err) {
    if (len < 18 || data[0] != 0x1F || data[1] != 0x8B) {
        ml_fail(err, "not a gzip file");
        return NULL;
    }
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        ml_fail(err, "zlib init failed");
        return NULL;
    }
    size_t cap = 1u << 20, n = 0;
    char *buf = malloc(cap + 1);
    int rc = Z_OK;
    zs.next_in = (Bytef *)data;
    zs.avail_in = (uInt)(len > UINT_MAX ? UINT_MAX : len);
    while (buf && rc == Z_OK) {
        if (n == cap) {
            char *nb = cap >= MAX_VOCAB_BYTES ? NULL : realloc(buf, cap * 2 + 1);
            if (!nb) break;
            buf = nb;
            cap *= 2;
        }
        zs.next_out = (Bytef *)buf + n;
        zs.avail_out = (uInt)(cap - n);
        rc = inflate(&zs, Z_NO_FLUSH);
        n = cap - zs.avail_out;
    }
    inflateEnd(&zs);
    if (rc != Z_STREAM_END) {
        ml_fail(err, rc == Z_OK ? "file too large or out of memory" : "corrupt gzip data");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *out_len = n;
    return buf;
}

/* The vocabulary strings, in id order, copied into one arena. */
typedef struct vocab {
    char *arena;
    const char *str[ML_VOCAB_SIZE];
} vocab;

/* Checks a merge line "a b" (exactly two space-free parts of valid UTF-8). */
static int merge_split(const char *line, size_t len, size_t *space) {
    const char *sp = memchr(line, ' ', len);
    if (!sp || sp == line || (size_t)(sp - line) == len - 1) return -1;
    *space = (size_t)(sp - line);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if ((c == ' ' && i != *space) || c == '\t' || c == '\r' || c == '\v' || c == '\f')
            return -1;
    }
    return utf8proc_decompose((const utf8proc_uint8_t *)line, (utf8proc_ssize_t)len, NULL, 0,
                              0) < 0 ? -1 : 0;
}

/* Builds the vocabulary strings from the file's lines 1..N_MERGES. */
static int build_vocab(vocab *v, char *text, size_t len, const char **merge_line, ml_error *err) {
    uint8_t order[256];
    uint32_t chars[256];
    bytes_to_unicode(order, chars);
    v->arena = malloc(len + 512 * 8 + 64);
    if (!v->arena) return ml_fail(err, "out of memory");
    char *p = v->arena;
    for (int i = 0; i < 512; i++) {
        v->str[i] = p;
        p += utf8proc_encode_char((utf8proc_int32_t)chars[i & 255], (utf8proc_uint8_t *)p);
        if (i >= 256) p += sprintf(p, "</w>");
        *p++ = '\0';
    }
    char *line = text, *end = text + len;
    for (int r = -1; r < N_MERGES; r++) {
        char *nl = line < end ? memchr(line, '\n', (size_t)(end - line)) : NULL;
        if (!nl)
            return ml_fail(err, "has %d lines, expected at least %d (truncated file?)", r + 2,
                           N_MERGES + 1);
        size_t space;
        if (r >= 0 && merge_split(line, (size_t)(nl - line), &space))
            return ml_fail(err, "line %d is not a merge of the form \"a b\"", r + 2);
        if (r >= 0) {
            merge_line[r] = line;
            v->str[512 + r] = p;
            memcpy(p, line, space);
            memcpy(p + space, line + space + 1, (size_t)(nl - line) - space - 1);
            p += (size_t)(nl - line) - 1;
            *p++ = '\0';
        }
        line = nl + 1;
    }
    v->str[ML_TOKEN_SOT] = "<|startoftext|>";
    v->str[ML_TOKEN_EOT] = "<|endoftext|>";
    return 0;
}

/* Fills the pair table: (id(a), id(b)) -> rank, id(a+b). */
static int build_pairs(ml_tokenizer *t, const vocab *v, const char **merge_line, ml_error *err) {
    str_table st = {calloc(STR_SLOTS, sizeof(char *)), calloc(STR_SLOTS, sizeof(int32_t))};
    int rc = 0;
    if (!st.key || !st.id) rc = ml_fail(err, "out of memory");
    for (int i = 0; !rc && i < ML_VOCAB_SIZE; i++) str_put(&st, v->str[i], i);
    for (int r = 0; !rc && r < N_MERGES; r++) {
        const char *line = merge_line[r];
        size_t la = strcspn(line, " "), lb = strcspn(line + la + 1, "\n");
        int32_t a = str_get(&st, line, la), b = str_get(&st, line + la + 1, lb);
        int32_t res = str_get(&st, v->str[512 + r], strlen(v->str[512 + r]));
        /* A merge whose parts are not symbols can never apply: skip it. */
        if (a >= 0 && b >= 0) pair_put(t->pairs, a, b, r, res);
    }
    free(st.key);
    free(st.id);
    return rc;
}

ml_tokenizer *ml_tokenizer_from_gz(const uint8_t *data, size_t len, ml_error *err) {
    size_t n = 0;
    char *text = gunzip(data, len, &n, err);
    if (!text) {
        ml_fail_prefix(err, "BPE vocabulary is corrupt");
        return NULL;
    }
    ml_tokenizer *t = calloc(1, sizeof *t);
    vocab *v = calloc(1, sizeof *v);
    const char **merge_line = calloc(N_MERGES, sizeof *merge_line);
    int rc = (!t || !v || !merge_line) ? ml_fail(err, "out of memory") : 0;
    if (!rc && !(t->pairs = calloc(PAIR_SLOTS, sizeof *t->pairs))) rc = ml_fail(err, "out of memory");
    if (!rc) rc = build_vocab(v, text, n, merge_line, err);
    if (!rc) rc = build_pairs(t, v, merge_line, err);
    if (!rc) {
        uint8_t order[256];
        uint32_t chars[256];
        bytes_to_unicode(order, chars);
        for (int i = 0; i < 256; i++) t->byte_id[order[i]] = i;
    }
    if (v) free(v->arena);
    free(v);
    free(merge_line);
    free(text);
    if (rc) {
        ml_tokenizer_free(t);
        ml_fail_prefix(err, "BPE vocabulary is corrupt");
        return NULL;
    }
    return t;
}

static uint8_t *read_file(const char *path, size_t *len, ml_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            ml_fail(err, "BPE vocabulary %s not found: download " VOCAB_URL
                    " (or run scripts/download-model.sh) and point MAGICLENS_VOCAB at it", path);
        else
            ml_fail(err, "cannot open BPE vocabulary %s: %s", path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0, k;
    do {
        if (n == cap) {
            uint8_t *nb = cap >= MAX_VOCAB_BYTES ? NULL : realloc(buf, cap ? cap * 2 : 1 << 20);
            if (!nb) break;
            buf = nb;
            cap = cap ? cap * 2 : 1 << 20;
        }
        k = fread(buf + n, 1, cap - n, f);
        n += k;
    } while (k > 0);
    int bad = ferror(f) || !feof(f);
    fclose(f);
    if (bad) {
        free(buf);
        ml_fail(err, "cannot read BPE vocabulary %s (read error or over 64 MiB)", path);
        return NULL;
    }
    *len = n;
    return buf;
}

ml_tokenizer *ml_tokenizer_load(const char *gz_path, ml_error *err) {
    size_t len = 0;
    uint8_t *data = read_file(gz_path, &len, err);
    if (!data) return NULL;
    ml_tokenizer *t = ml_tokenizer_from_gz(data, len, err);
    free(data);
    if (!t) ml_fail_prefix(err, "%s", gz_path);
    return t;
}

void ml_tokenizer_free(ml_tokenizer *t) {
    if (!t) return;
    free(t->pairs);
    free(t);
}

/* ---- encoding ------------------------------------------------------------ */

/* Applies merges by rank to sym[0..n) in place; returns the new length.
 * Same order as simple_tokenizer.bpe: lowest-ranked pair first, all its
 * non-overlapping occurrences left to right. */
static size_t bpe(const ml_tokenizer *t, int32_t *sym, size_t n) {
    while (n > 1) {
        const pair_slot *best = NULL;
        for (size_t i = 0; i + 1 < n; i++) {
            const pair_slot *p = pair_get(t->pairs, sym[i], sym[i + 1]);
            if (p && (!best || p->rank < best->rank)) best = p;
        }
        if (!best) break;
        int32_t a = (int32_t)((best->key - 1) >> 32), b = (int32_t)((best->key - 1) & 0xFFFFFFFF);
        size_t w = 0;
        for (size_t i = 0; i < n; i++) {
            if (i + 1 < n && sym[i] == a && sym[i + 1] == b) {
                sym[w++] = best->result;
                i++;
            } else {
                sym[w++] = sym[i];
            }
        }
        n = w;
    }
    return n;
}

/* ASCII case-insensitive match under the regex module's simple case folding
 * (the pattern is compiled with IGNORECASE: U+017F long s matches 's',
 * U+212A Kelvin sign matches 'k'). */
static int ci_eq(uint32_t c, char lit) {
    uint32_t l = (uint32_t)(unsigned char)lit;
    if (c == l) return 1;
    if (l >= 'a' && l <= 'z' && c == l - 32) return 1;
    return (l == 's' && c == 0x17F) || (l == 'k' && c == 0x212A);
}

static size_t match_lit(const uint32_t *v, size_t n, size_t i, const char *lit) {
    size_t k = 0;
    for (; lit[k]; k++)
        if (i + k >= n || !ci_eq(v[i + k], lit[k])) return 0;
    return k;
}

static int is_letter(uint32_t c) {
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}

static int is_number(uint32_t c) {
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO;
}

static int is_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* [^\s\p{L}\p{N}] under IGNORECASE.  U+0345 (combining ypogegrammeni) case-
 * folds to a letter, so the regex module matches it with no branch at all:
 * findall skips it. */
static int is_other(uint32_t c) {
    return !is_space(c) && !is_letter(c) && !is_number(c) && c != 0x345;
}

/* Length of the pre-tokeniser match at v[i] (0: no match, findall skips). */
static size_t scan_piece(const uint32_t *v, size_t n, size_t i) {
    static const char *const lits[] = {"<|startoftext|>", "<|endoftext|>", "'s", "'t", "'re",
                                       "'ve", "'m", "'ll", "'d"};
    for (size_t k = 0; k < sizeof lits / sizeof lits[0]; k++) {
        size_t m = match_lit(v, n, i, lits[k]);
        if (m) return m;
    }
    size_t j = i;
    if (is_letter(v[i])) {
        while (j < n && is_letter(v[j])) j++;
    } else if (is_number(v[i])) {
        j++;
    } else {
        while (j < n && is_other(v[j])) j++;
    }
    return j - i;
}

static int exact_ascii(const uint32_t *v, size_t n, const char *lit) {
    size_t k = 0;
    for (; lit[k]; k++)
        if (k >= n || v[k] != (uint32_t)(unsigned char)lit[k]) return 0;
    return k == n;
}

/* Token output: the first `cap` tokens are stored, all are counted. */
typedef struct tok_out {
    int32_t *ids;
    size_t cap, count;
} tok_out;

static void emit(tok_out *o, int32_t id) {
    if (o->count < o->cap) o->ids[o->count] = id;
    o->count++;
}

/* Encodes one piece v[0..n); `sym` has room for 4*n symbols. */
static void encode_piece(const ml_tokenizer *t, const uint32_t *v, size_t n, int32_t *sym,
                         tok_out *o) {
    char buf[16];
    /* Only the exact ASCII strings hit simple_tokenizer's cache entries. */
    if (exact_ascii(v, n, "<|startoftext|>")) {
        emit(o, ML_TOKEN_SOT);
        return;
    }
    if (exact_ascii(v, n, "<|endoftext|>")) {
        emit(o, ML_TOKEN_EOT);
        return;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = ml_utf8_encode(v + i, 1, buf);
        for (size_t j = 0; j < k; j++) sym[m++] = t->byte_id[(uint8_t)buf[j]];
    }
    sym[m - 1] += 256; /* the "</w>" variant */
    m = bpe(t, sym, m);
    for (size_t i = 0; i < m; i++) emit(o, sym[i]);
}

/* Describes the text for error messages: its first 40 bytes, cut at a
 * character boundary. */
static const char *text_head(const char *s, char *buf, size_t cap) {
    size_t n = strlen(s), k = n < cap - 4 ? n : cap - 4;
    while (k > 0 && k < n && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    memcpy(buf, s, k);
    strcpy(buf + k, k < n ? "..." : "");
    return buf;
}

int ml_tokenizer_encode(const ml_tokenizer *t, const char *utf8, int context_len, int truncate,
                        int32_t *ids, ml_error *err) {
    if (context_len < 2) return ml_fail(err, "context length %d is under 2", context_len);
    uint32_t *v;
    size_t n;
    if (ml_text_clean_cp(utf8, strlen(utf8), &v, &n, err)) return -1;
    int32_t *sym = malloc((n * 4 + 1) * sizeof *sym);
    if (!sym) {
        free(v);
        return ml_fail(err, "out of memory tokenizing");
    }
    memset(ids, 0, (size_t)context_len * sizeof *ids);
    tok_out o = {ids + 1, (size_t)context_len - 2, 0};
    for (size_t i = 0; i < n && (!truncate || o.count <= o.cap);) {
        size_t m = scan_piece(v, n, i);
        if (m) encode_piece(t, v + i, m, sym, &o);
        i += m ? m : 1;
    }
    free(sym);
    free(v);
    size_t used = o.count < o.cap ? o.count : o.cap;
    if (o.count > o.cap && !truncate) {
        char head[48];
        memset(ids, 0, (size_t)context_len * sizeof *ids);
        return ml_fail(err, "text \"%s\" is %zu tokens, over the context of %d; use --truncate",
                       text_head(utf8, head, sizeof head), o.count + 2, context_len);
    }
    ids[0] = ML_TOKEN_SOT;
    ids[used + 1] = ML_TOKEN_EOT;
    return (int)used + 2;
}
