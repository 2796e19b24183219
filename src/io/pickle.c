/* pickle.c - see pickle.h.  A symbolic mini-machine: the stack holds only
 * the few value kinds the accepted patterns need, so an unexpected sequence
 * is caught at the first opcode that does not fit. */
#include "io/pickle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"

enum {
    OP_PROTO = 0x80, OP_FRAME = 0x95, OP_SHORT_BINBYTES = 'C', OP_BINBYTES = 'B',
    OP_BINBYTES8 = 0x8e, OP_BYTEARRAY8 = 0x96, OP_MEMOIZE = 0x94, OP_BINPUT = 'q',
    OP_LONG_BINPUT = 'r', OP_STOP = '.', OP_GLOBAL = 'c', OP_BINUNICODE = 'X',
    OP_SHORT_BINUNICODE = 0x8c, OP_TUPLE2 = 0x86, OP_EMPTY_TUPLE = ')', OP_REDUCE = 'R',
};

typedef enum {
    V_BYTES,        /* p/n: the payload                        */
    V_STR,          /* p/n: UTF-8 text                         */
    V_CODECS,       /* the callable _codecs.encode             */
    V_BYTES_TYPE,   /* the callable __builtin__.bytes           */
    V_LATIN1_ARGS,  /* (p/n str, 'latin1')                      */
    V_EMPTY_TUPLE,
} vkind;

typedef struct {
    vkind kind;
    const uint8_t *p;
    size_t n;
} pval;

#define PSTACK 4 /* the deepest accepted pattern holds 3 values */

typedef struct {
    const uint8_t *d;
    size_t len, pos;
    pval st[PSTACK];
    int sp;
    int proto;
    uint8_t *owned; /* decoded latin-1 payload, if any */
    ml_error *err;
} pmachine;

static int fail_at(pmachine *m, size_t off, const char *what) {
    return ml_fail(m->err, "pickle: %s at offset %zu", what, off);
}

/* Reads an n-byte little-endian unsigned argument. */
static int read_le(pmachine *m, size_t n, uint64_t *v, size_t op_off) {
    if (m->len - m->pos < n) return fail_at(m, op_off, "truncated opcode argument");
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) x |= (uint64_t)m->d[m->pos + i] << (8 * i);
    m->pos += n;
    *v = x;
    return 0;
}

/* Takes `n` bytes of inline data, checking they are inside the buffer. */
static int take(pmachine *m, uint64_t n, const uint8_t **p, size_t op_off) {
    if (n > m->len - m->pos) return fail_at(m, op_off, "length past the end of the data");
    *p = m->d + m->pos;
    m->pos += (size_t)n;
    return 0;
}

static int push(pmachine *m, vkind k, const uint8_t *p, size_t n, size_t op_off) {
    if (m->sp >= PSTACK) return fail_at(m, op_off, "unexpected extra value");
    m->st[m->sp++] = (pval){k, p, n};
    return 0;
}

static int op_bytes(pmachine *m, int op, size_t off, vkind kind) {
    size_t nlen = op == OP_SHORT_BINBYTES || op == OP_SHORT_BINUNICODE ? 1
                  : op == OP_BINBYTES || op == OP_BINUNICODE       ? 4
                                                                    : 8;
    uint64_t n;
    const uint8_t *p = NULL;
    if (read_le(m, nlen, &n, off) != 0 || take(m, n, &p, off) != 0) return -1;
    return push(m, kind, p, (size_t)n, off);
}

static int op_global(pmachine *m, size_t off) {
    /* GLOBAL's argument is "module\nname\n"; only two exact names are accepted. */
    static const char codecs[] = "_codecs\nencode\n", bytes_t[] = "__builtin__\nbytes\n";
    size_t rest = m->len - m->pos;
    const uint8_t *a = m->d + m->pos;
    if (rest >= sizeof codecs - 1 && memcmp(a, codecs, sizeof codecs - 1) == 0) {
        m->pos += sizeof codecs - 1;
        return push(m, V_CODECS, NULL, 0, off);
    }
    if (rest >= sizeof bytes_t - 1 && memcmp(a, bytes_t, sizeof bytes_t - 1) == 0) {
        m->pos += sizeof bytes_t - 1;
        return push(m, V_BYTES_TYPE, NULL, 0, off);
    }
    /* Name the refused global (printable part only) to make the error useful. */
    char name[64];
    size_t k = 0;
    int newlines = 0;
    for (; k < rest && k < sizeof name - 1; k++) {
        uint8_t c = a[k];
        if (c == '\n' && ++newlines == 2) break;
        name[k] = c == '\n' ? ' ' : (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    name[k] = '\0';
    return ml_fail(m->err, "pickle: refusing GLOBAL '%s' at offset %zu (only bytes are accepted)",
                   name, off);
}

static int op_tuple2(pmachine *m, size_t off) {
    if (m->sp < 2) return fail_at(m, off, "TUPLE2 with fewer than 2 values");
    pval *a = &m->st[m->sp - 2], *b = &m->st[m->sp - 1];
    if (a->kind != V_STR || b->kind != V_STR || b->n != 6 || memcmp(b->p, "latin1", 6) != 0)
        return fail_at(m, off, "TUPLE2 other than (str, 'latin1')");
    m->sp -= 2;
    return push(m, V_LATIN1_ARGS, a->p, a->n, off);
}

/* Decodes UTF-8 text whose code points are all < 256 back to those bytes. */
static int latin1_decode(pmachine *m, const uint8_t *p, size_t n, size_t off) {
    uint8_t *out = ml_malloc(n, m->err);
    if (!out) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c < 0x80) {
            out[k++] = c;
        } else if ((c == 0xc2 || c == 0xc3) && i + 1 < n && (p[i + 1] & 0xc0) == 0x80) {
            out[k++] = (uint8_t)(((c & 0x03) << 6) | (p[i + 1] & 0x3f));
            i++;
        } else {
            free(out);
            return ml_fail(m->err, "pickle: text at offset %zu is not latin-1 (byte %zu)", off, i);
        }
    }
    free(m->owned);
    m->owned = out;
    m->sp -= 2;
    return push(m, V_BYTES, out, k, off);
}

static int op_reduce(pmachine *m, size_t off) {
    if (m->sp < 2) return fail_at(m, off, "REDUCE with fewer than 2 values");
    pval *fn = &m->st[m->sp - 2], *args = &m->st[m->sp - 1];
    if (fn->kind == V_CODECS && args->kind == V_LATIN1_ARGS) {
        if (m->owned) return fail_at(m, off, "second bytes value");
        return latin1_decode(m, args->p, args->n, off);
    }
    if (fn->kind == V_BYTES_TYPE && args->kind == V_EMPTY_TUPLE) {
        m->sp -= 2;
        return push(m, V_BYTES, m->d, 0, off);
    }
    return fail_at(m, off, "REDUCE other than _codecs.encode(str, 'latin1') or bytes()");
}

/* Executes one opcode; returns 1 at STOP, 0 to go on, -1 on error. */
static int step(pmachine *m) {
    size_t off = m->pos;
    int op = m->d[m->pos++];
    uint64_t v = 0;
    if (off == 0 && op != OP_PROTO) return fail_at(m, off, "not a pickle of protocol 2-5 (no PROTO)");
    switch (op) {
    case OP_PROTO:
        if (off != 0) return fail_at(m, off, "PROTO not at the start");
        if (read_le(m, 1, &v, off) != 0) return -1;
        if (v < 2 || v > 5)
            return ml_fail(m->err, "pickle: protocol %u not supported (2-5 are)", (unsigned)v);
        m->proto = (int)v;
        return 0;
    case OP_FRAME:
        if (read_le(m, 8, &v, off) != 0) return -1;
        if (v > m->len - m->pos) return fail_at(m, off, "FRAME longer than the data");
        return 0;
    case OP_SHORT_BINBYTES: case OP_BINBYTES: case OP_BINBYTES8: case OP_BYTEARRAY8:
        return op_bytes(m, op, off, V_BYTES);
    case OP_BINUNICODE: case OP_SHORT_BINUNICODE:
        return op_bytes(m, op, off, V_STR);
    case OP_MEMOIZE: case OP_BINPUT: case OP_LONG_BINPUT:
        /* The memo is never read back (no GET is accepted), so storing is a no-op. */
        if (m->sp == 0) return fail_at(m, off, "memo store with an empty stack");
        return read_le(m, op == OP_BINPUT ? 1 : op == OP_LONG_BINPUT ? 4 : 0, &v, off);
    case OP_GLOBAL: return op_global(m, off);
    case OP_TUPLE2: return op_tuple2(m, off);
    case OP_EMPTY_TUPLE: return push(m, V_EMPTY_TUPLE, NULL, 0, off);
    case OP_REDUCE: return op_reduce(m, off);
    case OP_STOP:
        if (m->sp != 1 || m->st[0].kind != V_BYTES)
            return fail_at(m, off, "STOP without exactly one bytes value");
        return 1;
    default: {
        char what[64];
        snprintf(what, sizeof what, "unsupported opcode 0x%02x", (unsigned)op);
        return fail_at(m, off, what);
    }
    }
}

int ml_pickle_unwrap_bytes(const uint8_t *data, size_t len, const uint8_t **payload,
                           size_t *payload_len, uint8_t **owned, ml_error *err) {
    pmachine m = {.d = data, .len = len, .err = err};
    int rc = 0;
    *payload = NULL;
    *payload_len = 0;
    if (owned) *owned = NULL;
    while (rc == 0) {
        if (m.pos >= m.len) {
            rc = ml_fail(err, "pickle: truncated: no STOP before the end (%zu bytes)", len);
            break;
        }
        rc = step(&m);
        if (rc == 0 && m.owned && !owned) {
            rc = ml_fail(err, "pickle: latin-1 encoded bytes need a decode buffer");
        }
    }
    if (rc < 0) {
        free(m.owned);
        return -1;
    }
    /* Trailing bytes after STOP are ignored by Python's loader; do the same. */
    *payload = m.st[0].p;
    *payload_len = m.st[0].n;
    if (owned) *owned = m.owned;
    return 0;
}
