/* warc.c - a lenient streaming WARC/ARC reader (see warc.h).
 *
 * Two layers.  The byte layer turns the file into one uncompressed stream
 * held in a sliding window: plain files are copied, gzip files are inflated
 * member after member (zlib, windowBits 47, reset at each member end).  It
 * remembers where each member starts (for record offsets) and where a damaged
 * member was abandoned ("breaks": the bytes on either side do not belong
 * together).  The record layer reads header lines and blocks from the window
 * and never lets a block run across a break. */
#include "mine/warc.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/error.h"

#define IN_SIZE (1 << 16)    /* compressed read size */
#define WIN_SIZE (1 << 18)   /* uncompressed window */
#define MAX_LINE (1 << 15)   /* longer "lines" are garbage */
#define MAX_HEADER_LINES 512 /* more is garbage, not a header */

typedef struct member {
    long long upos, coff; /* uncompressed start, file offset */
} member;

struct ml_warc_reader {
    FILE *f;
    const char *name;
    ml_warc_warn_fn warn;
    void *ctx;
    long warnings;
    int gz;
    long long plain_read; /* plain input: bytes read so far */
    /* compressed input: in[in_pos, in_len) is at file offset in_off + in_pos */
    unsigned char *in;
    size_t in_len, in_pos;
    long long in_off;
    z_stream zs;
    int in_member;
    long long member_coff;
    /* window: buf[head, tail) is the stream from uncompressed position pos */
    unsigned char *buf;
    size_t head, tail;
    long long pos;
    int at_end;
    member *mem; /* member starts, oldest first (pruned at each record) */
    size_t nmem, memcap;
    long long *brk; /* break positions, ascending */
    size_t nbrk, brkcap;
    /* the current record */
    ml_warc_record rec;
    int in_block;
    long long block_left;
};

static void warnf(ml_warc_reader *r, long long offset, const char *fmt, ...) ML_PRINTF(3, 4);
static void warnf(ml_warc_reader *r, long long offset, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->warnings++;
    if (r->warn) r->warn(r->ctx, r->name, offset, msg);
}

static int push_member(ml_warc_reader *r, member m, ml_error *err) {
    if (r->nmem == r->memcap) {
        size_t nc = r->memcap ? 2 * r->memcap : 8;
        member *p = realloc(r->mem, nc * sizeof *p);
        if (!p) return ml_fail(err, "out of memory");
        r->mem = p, r->memcap = nc;
    }
    r->mem[r->nmem++] = m;
    return 0;
}

static int push_break(ml_warc_reader *r, long long upos, ml_error *err) {
    if (r->nbrk == r->brkcap) {
        size_t nc = r->brkcap ? 2 * r->brkcap : 8;
        long long *p = realloc(r->brk, nc * sizeof *p);
        if (!p) return ml_fail(err, "out of memory");
        r->brk = p, r->brkcap = nc;
    }
    r->brk[r->nbrk++] = upos;
    return 0;
}

/* The offset reported for uncompressed position upos (see warc.h). */
static long long offset_of(const ml_warc_reader *r, long long upos) {
    if (!r->gz) return upos;
    long long off = 0;
    for (size_t i = 0; i < r->nmem && r->mem[i].upos <= upos; i++) off = r->mem[i].coff;
    return off;
}

/* ---- byte layer ------------------------------------------------------ */

static int refill_in(ml_warc_reader *r, ml_error *err) {
    if (r->in_pos > 0) {
        memmove(r->in, r->in + r->in_pos, r->in_len - r->in_pos);
        r->in_off += (long long)r->in_pos;
        r->in_len -= r->in_pos;
        r->in_pos = 0;
    }
    size_t n = fread(r->in + r->in_len, 1, IN_SIZE - r->in_len, r->f);
    if (n == 0 && ferror(r->f)) return ml_fail(err, "%s: read error: %s", r->name, strerror(errno));
    r->in_len += n;
    return n > 0;
}

static int is_member_start(const unsigned char *p) {
    /* gzip magic, method deflate, reserved flag bits clear */
    return p[0] == 0x1f && p[1] == 0x8b && p[2] == 8 && (p[3] & 0xe0) == 0;
}

/* Moves in_pos to the next gzip member: 1 found, 0 end of file. */
static int find_member(ml_warc_reader *r, ml_error *err) {
    long long skipped_from = -1;
    for (;;) {
        if (r->in_len - r->in_pos < 4) {
            int rc = refill_in(r, err);
            if (rc < 0) return -1;
            if (rc == 0) {
                if (skipped_from >= 0 || r->in_len > r->in_pos)
                    warnf(
                        r, skipped_from >= 0 ? skipped_from : r->in_off + (long long)r->in_pos,
                        "%lld bytes of trailing garbage after the last gzip member",
                        r->in_off + (long long)r->in_len -
                            (skipped_from >= 0 ? skipped_from : r->in_off + (long long)r->in_pos));
                r->in_pos = r->in_len;
                return 0;
            }
            continue;
        }
        if (is_member_start(r->in + r->in_pos)) break;
        if (skipped_from < 0) skipped_from = r->in_off + (long long)r->in_pos;
        r->in_pos++;
    }
    if (skipped_from >= 0)
        warnf(r, skipped_from,
              "skipped %lld bytes of garbage before the gzip member at offset %lld",
              r->in_off + (long long)r->in_pos - skipped_from, r->in_off + (long long)r->in_pos);
    return 1;
}

static int start_member(ml_warc_reader *r, ml_error *err) {
    int rc = find_member(r, err);
    if (rc <= 0) return rc;
    if (inflateReset(&r->zs) != Z_OK) return ml_fail(err, "%s: zlib reset failed", r->name);
    r->in_member = 1;
    r->member_coff = r->in_off + (long long)r->in_pos;
    member m = {r->pos + (long long)(r->tail - r->head), r->member_coff};
    return push_member(r, m, err) ? -1 : 1;
}

static int fill_gz(ml_warc_reader *r, ml_error *err) {
    for (;;) {
        if (!r->in_member) {
            int rc = start_member(r, err);
            if (rc <= 0) return rc;
        }
        if (r->in_pos == r->in_len) {
            int rc = refill_in(r, err);
            if (rc < 0) return -1;
            if (rc == 0) {
                warnf(r, r->member_coff, "the file ends inside the gzip member at offset %lld",
                      r->member_coff);
                r->in_member = 0;
                return 0;
            }
        }
        size_t in_avail = r->in_len - r->in_pos, out_avail = WIN_SIZE - r->tail;
        r->zs.next_in = r->in + r->in_pos;
        r->zs.avail_in = (uInt)in_avail;
        r->zs.next_out = r->buf + r->tail;
        r->zs.avail_out = (uInt)out_avail;
        int zrc = inflate(&r->zs, Z_NO_FLUSH);
        size_t produced = out_avail - r->zs.avail_out;
        r->in_pos += in_avail - r->zs.avail_in;
        r->tail += produced;
        if (zrc == Z_STREAM_END) {
            r->in_member = 0;
        } else if (zrc != Z_OK && zrc != Z_BUF_ERROR) {
            warnf(r, r->member_coff,
                  "damaged gzip member at offset %lld (%s); skipping to the next", r->member_coff,
                  r->zs.msg ? r->zs.msg : "inflate error");
            r->in_member = 0;
            /* never find the same member again */
            if (r->in_off + (long long)r->in_pos == r->member_coff) r->in_pos++;
            if (push_break(r, r->pos + (long long)(r->tail - r->head), err)) return -1;
        }
        if (produced) return 1;
    }
}

/* Appends bytes to the window: 1, 0 at the end of the input, -1 error. */
static int fill(ml_warc_reader *r, ml_error *err) {
    if (r->at_end) return 0;
    if (r->head > 0 && (r->tail == WIN_SIZE || r->head > WIN_SIZE / 2)) {
        memmove(r->buf, r->buf + r->head, r->tail - r->head);
        r->tail -= r->head;
        r->head = 0;
    }
    if (r->tail == WIN_SIZE) return 1; /* full: the caller has enough */
    int rc;
    if (r->gz) {
        rc = fill_gz(r, err);
    } else {
        size_t n = fread(r->buf + r->tail, 1, WIN_SIZE - r->tail, r->f);
        if (n == 0 && ferror(r->f))
            return ml_fail(err, "%s: read error: %s", r->name, strerror(errno));
        r->tail += n;
        r->plain_read += (long long)n;
        rc = n > 0;
    }
    if (rc == 0) r->at_end = 1;
    return rc;
}

/* Bytes readable before the next break (filling until at least `want`). */
static long long avail(ml_warc_reader *r, size_t want, ml_error *err) {
    for (;;) {
        long long have = (long long)(r->tail - r->head);
        if (r->nbrk && r->brk[0] - r->pos < have) have = r->brk[0] - r->pos;
        if (have >= (long long)want ||
            (r->nbrk && r->brk[0] < r->pos + (long long)(r->tail - r->head)))
            return have;
        int rc = fill(r, err);
        if (rc < 0) return -1;
        if (rc == 0) return have;
    }
}

static int at_break(const ml_warc_reader *r) { return r->nbrk && r->brk[0] == r->pos; }

static void pass_break(ml_warc_reader *r) {
    memmove(r->brk, r->brk + 1, (r->nbrk - 1) * sizeof *r->brk);
    r->nbrk--;
}

static void consume(ml_warc_reader *r, size_t n) {
    r->head += n;
    r->pos += (long long)n;
}

/* Copies (to out, if not NULL) or skips n bytes: the count done (short at
 * the end of the input or at a break), -1 on error. */
static long long take(ml_warc_reader *r, unsigned char *out, long long n, ml_error *err) {
    long long done = 0;
    while (done < n) {
        long long a = avail(r, 1, err);
        if (a < 0) return -1;
        if (a == 0) break;
        size_t k = (size_t)(a < n - done ? a : n - done);
        if (out) memcpy(out + done, r->buf + r->head, k);
        consume(r, k);
        done += (long long)k;
    }
    return done;
}

/* The line at the window head: its length with the '\n' (or what is left
 * before the end / a break / MAX_LINE), 0 at the end, -1 on error. */
static long long line_len(ml_warc_reader *r, ml_error *err) {
    size_t searched = 0;
    for (;;) {
        long long a = avail(r, searched + 1, err);
        if (a < 0) return -1;
        if (a > MAX_LINE) a = MAX_LINE;
        const unsigned char *nl = memchr(r->buf + r->head + searched, '\n', (size_t)a - searched);
        if (nl) return nl - (r->buf + r->head) + 1;
        if (a == MAX_LINE || (long long)searched == a) return a; /* too long, or no more bytes */
        searched = (size_t)a;
    }
}

/* ---- record layer ---------------------------------------------------- */

static int is_blank(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != '\r' && s[i] != '\n') return 0;
    return 1;
}

static size_t trim_eol(const unsigned char *s, size_t n) {
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
    return n;
}

static int is_warc_line(const unsigned char *s, size_t n) {
    return n >= 6 && !strncasecmp((const char *)s, "WARC/", 5) && isdigit(s[5]);
}

static int all_digits(const char *s, size_t min, size_t max) {
    size_t n = strlen(s);
    if (n < min || n > max) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return 0;
    return 1;
}

/* Copies value (trimmed, <> removed) into a fresh string. */
static char *dup_value(const char *v, size_t n, int strip_angle) {
    while (n && (*v == ' ' || *v == '\t')) v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
    if (strip_angle && n >= 2 && v[0] == '<' && v[n - 1] == '>') v++, n -= 2;
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, v, n);
        s[n] = 0;
    }
    return s;
}

static void clear_record(ml_warc_reader *r) {
    free(r->rec.uri);
    free(r->rec.content_type);
    memset(&r->rec, 0, sizeof r->rec);
}

/* An ARC header line "URL IP DATE MIME [...] LENGTH" (v1: 5 fields, v2: 10). */
static int parse_arc_line(ml_warc_reader *r, const unsigned char *s, size_t n, ml_error *err) {
    char line[4096], *f[16];
    if (n >= sizeof line) return 0;
    memcpy(line, s, n);
    line[n] = 0;
    int nf = 0;
    for (char *save = NULL, *t = strtok_r(line, " ", &save); t && nf < 16;
         t = strtok_r(NULL, " ", &save))
        f[nf++] = t;
    if ((nf != 5 && nf != 10) || !all_digits(f[2], 8, 17) || !all_digits(f[nf - 1], 1, 15))
        return 0;
    const char *colon = strchr(f[0], ':');
    if (!colon || colon == f[0] || colon - f[0] > 16) return 0;
    for (const char *p = f[0]; p < colon; p++)
        if (!isalpha((unsigned char)*p)) return 0;
    clear_record(r);
    r->rec.arc = 1;
    snprintf(r->rec.type, sizeof r->rec.type, "%s",
             !strncmp(f[0], "filedesc:", 9) ? "filedesc" : "response");
    r->rec.uri = strdup(f[0]);
    r->rec.content_type = strdup(f[3]);
    if (!r->rec.uri || !r->rec.content_type) return ml_fail(err, "out of memory");
    r->rec.length = strtoll(f[nf - 1], NULL, 10);
    return 1;
}

/* Reads the WARC header fields after the version line: 1 ok, 0 not a
 * usable header (warned), -1 error. */
static int parse_warc_header(ml_warc_reader *r, ml_error *err) {
    int have_len = 0;
    for (int i = 0;; i++) {
        long long n = line_len(r, err);
        if (n < 0) return -1;
        const unsigned char *s = r->buf + r->head;
        if (n == 0 || s[n - 1] != '\n' || i == MAX_HEADER_LINES) {
            warnf(r, r->rec.offset, "record header at offset %lld is cut short or too long",
                  r->rec.offset);
            return 0;
        }
        size_t len = trim_eol(s, (size_t)n);
        if (len == 0) {
            consume(r, (size_t)n);
            break;
        }
        const unsigned char *colon = memchr(s, ':', len);
        if (colon && s[0] != ' ' && s[0] != '\t') {
            size_t kn = (size_t)(colon - s), vn = len - kn - 1;
            const char *k = (const char *)s, *v = (const char *)colon + 1;
            char **dst = NULL;
            int angle = 0;
            if (kn == 9 && !strncasecmp(k, "WARC-Type", 9)) {
                char *t = dup_value(v, vn, 0);
                if (!t) return ml_fail(err, "out of memory");
                snprintf(r->rec.type, sizeof r->rec.type, "%s", t);
                for (char *p = r->rec.type; *p; p++) *p = (char)tolower((unsigned char)*p);
                free(t);
            } else if (kn == 15 && !strncasecmp(k, "WARC-Target-URI", 15)) {
                dst = &r->rec.uri, angle = 1;
            } else if (kn == 12 && !strncasecmp(k, "Content-Type", 12)) {
                dst = &r->rec.content_type;
            } else if (kn == 19 && !strncasecmp(k, "WARC-Segment-Number", 19)) {
                r->rec.segmented = 1;
            } else if (kn == 14 && !strncasecmp(k, "Content-Length", 14)) {
                char num[24];
                char *t = dup_value(v, vn, 0);
                if (!t) return ml_fail(err, "out of memory");
                snprintf(num, sizeof num, "%s", t);
                have_len = all_digits(t, 1, 15);
                free(t);
                if (have_len) r->rec.length = strtoll(num, NULL, 10);
            }
            if (dst && !*dst && !(*dst = dup_value(v, vn, angle)))
                return ml_fail(err, "out of memory");
        }
        consume(r, (size_t)n);
    }
    if (!have_len) {
        warnf(r, r->rec.offset, "record at offset %lld has no valid Content-Length; skipped",
              r->rec.offset);
        return 0;
    }
    return 1;
}

/* Drops member starts that no later record can need. */
static void prune_members(ml_warc_reader *r) {
    size_t keep = 0;
    while (keep + 1 < r->nmem && r->mem[keep + 1].upos <= r->pos) keep++;
    if (keep) {
        memmove(r->mem, r->mem + keep, (r->nmem - keep) * sizeof *r->mem);
        r->nmem -= keep;
    }
}

static int finish_block(ml_warc_reader *r, ml_error *err) {
    if (!r->in_block) return 0;
    r->in_block = 0;
    long long got = take(r, NULL, r->block_left, err);
    if (got < 0) return -1;
    if (got < r->block_left)
        warnf(r, r->rec.offset, "record at offset %lld is truncated (%lld of %lld block bytes)",
              r->rec.offset, r->rec.length - r->block_left + got, r->rec.length);
    return 0;
}

int ml_warc_next(ml_warc_reader *r, ml_warc_record *rec, ml_error *err) {
    if (finish_block(r, err)) return -1;
    int garbage = 0;
    for (;;) {
        if (at_break(r)) pass_break(r);
        long long n = line_len(r, err);
        if (n < 0) return -1;
        if (n == 0) {
            if (at_break(r)) continue;
            return 0;
        }
        const unsigned char *s = r->buf + r->head;
        if (is_blank(s, (size_t)n)) {
            consume(r, (size_t)n);
            continue;
        }
        prune_members(r);
        long long upos = r->pos;
        int rc = 0;
        if (s[n - 1] == '\n' && is_warc_line(s, (size_t)n)) {
            clear_record(r);
            r->rec.offset = offset_of(r, upos);
            consume(r, (size_t)n);
            rc = parse_warc_header(r, err);
        } else if (s[n - 1] == '\n') {
            rc = parse_arc_line(r, s, trim_eol(s, (size_t)n), err);
            if (rc == 1) {
                r->rec.offset = offset_of(r, upos);
                consume(r, (size_t)n);
            }
        }
        if (rc < 0) return -1;
        if (rc == 1) {
            r->in_block = 1;
            r->block_left = r->rec.length;
            *rec = r->rec;
            return 1;
        }
        if (!garbage && r->pos == upos)
            warnf(r, offset_of(r, upos),
                  "unexpected data at offset %lld (uncompressed %lld); skipping to the next record",
                  offset_of(r, upos), upos);
        garbage = 1;
        if (r->pos == upos) consume(r, (size_t)n);
    }
}

int ml_warc_read_block(ml_warc_reader *r, size_t max, unsigned char **data, size_t *len,
                       ml_error *err) {
    *data = NULL, *len = 0;
    if (!r->in_block) return ML_WARC_BLOCK_OK;
    if (r->block_left > (long long)max) return ML_WARC_BLOCK_TOO_LARGE;
    unsigned char *buf = malloc((size_t)r->block_left + 1);
    if (!buf) return ml_fail(err, "out of memory (%lld byte record)", r->block_left);
    long long got = take(r, buf, r->block_left, err);
    if (got < 0) {
        free(buf);
        return -1;
    }
    buf[got] = 0;
    *data = buf, *len = (size_t)got;
    r->in_block = 0;
    if (got < r->block_left) {
        warnf(r, r->rec.offset, "record at offset %lld is truncated (%lld of %lld block bytes)",
              r->rec.offset, got, r->rec.length);
        return ML_WARC_BLOCK_TRUNCATED;
    }
    return ML_WARC_BLOCK_OK;
}

ml_warc_reader *ml_warc_open(FILE *f, const char *name, ml_warc_warn_fn warn, void *ctx,
                             ml_error *err) {
    ml_warc_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->in = malloc(IN_SIZE)) || !(r->buf = malloc(WIN_SIZE))) {
        ml_warc_close(r);
        ml_fail(err, "out of memory");
        return NULL;
    }
    r->f = f, r->name = name, r->warn = warn, r->ctx = ctx;
    if (refill_in(r, err) < 0) {
        ml_warc_close(r);
        return NULL;
    }
    r->gz = r->in_len >= 2 && r->in[0] == 0x1f && r->in[1] == 0x8b;
    if (r->gz) {
        if (inflateInit2(&r->zs, 47) != Z_OK) {
            ml_warc_close(r);
            ml_fail(err, "%s: zlib init failed", name);
            return NULL;
        }
    } else {
        /* plain: what was read to sniff becomes the first window bytes */
        memcpy(r->buf, r->in, r->in_len);
        r->tail = r->in_len;
        r->plain_read = (long long)r->in_len;
        r->in_len = 0;
    }
    return r;
}

void ml_warc_close(ml_warc_reader *r) {
    if (!r) return;
    if (r->gz) inflateEnd(&r->zs);
    clear_record(r);
    free(r->in);
    free(r->buf);
    free(r->mem);
    free(r->brk);
    free(r);
}

long long ml_warc_consumed(const ml_warc_reader *r) {
    return r->gz ? r->in_off + (long long)r->in_pos : r->plain_read;
}

long ml_warc_warnings(const ml_warc_reader *r) { return r->warnings; }
