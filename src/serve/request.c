/* request.c - see request.h.  Every field is checked here (types, ranges,
 * UTF-8, sizes) so the handlers only see well-formed queries. */
#include "serve/request.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "serve/media.h"

void ml_sreq_init(ml_sreq *r) {
    memset(r, 0, sizeof *r);
    r->image_id = -1, r->k = 10, r->min_score = -INFINITY;
}

void ml_sreq_free(ml_sreq *r) {
    free(r->image), free(r->text), free(r->prefix);
    free(r->f_k), free(r->f_offset), free(r->f_min), free(r->f_id);
    ml_sreq_init(r);
}

static int bad(ml_error *err, int status, const char *msg) {
    ml_fail(err, "%s", msg);
    return status;
}

static int set_text(ml_sreq *r, const char *s, size_t n, const ml_sreq_limits *lim, ml_error *err) {
    if (n > lim->max_text) {
        ml_fail(err, "the instruction is %zu bytes long; the limit is %zu", n, lim->max_text);
        return 413;
    }
    if (!ml_utf8_valid(s, n)) return bad(err, 400, "the instruction is not valid UTF-8 text");
    free(r->text);
    r->text = malloc(n + 1);
    if (!r->text) return bad(err, 500, "out of memory");
    memcpy(r->text, s, n), r->text[n] = 0, r->text_len = n;
    return 0;
}

static int check_ranges(ml_sreq *r, const ml_sreq_limits *lim, ml_error *err) {
    if (r->k < 1 || r->offset < 0 || (long long)r->k + r->offset > lim->max_k) {
        ml_fail(err, "k must be at least 1, offset at least 0, and k + offset at most %d", lim->max_k);
        return 400;
    }
    if (!(r->min_score >= -2 && r->min_score <= 2) && r->min_score != -INFINITY)
        return bad(err, 400, "min_score must be a number between -2 and 2");
    if (r->image_id < -1) return bad(err, 400, "image_id must be a non-negative integer");
    if (r->has_image && r->image_id >= 0)
        return bad(err, 400, "give either an image or an image_id, not both");
    if (!r->has_image && r->image_id < 0 && !r->text)
        return bad(err, 400, "nothing to search for: give an image, an image_id and/or a text");
    return 0;
}

/* ---- JSON ------------------------------------------------------------- */

static int json_int(json_t *v, const char *name, long long lo, long long hi, long long *out,
                    ml_error *err) {
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        ml_fail(err, "%s must be an integer between %lld and %lld", name, lo, hi);
        return 400;
    }
    *out = json_integer_value(v);
    return 0;
}

static int json_image(ml_sreq *r, json_t *v, const ml_sreq_limits *lim, ml_error *err) {
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return bad(err, 400, "image must be a base64 string");
    size_t n;
    r->image = ml_base64_decode(json_string_value(v), json_string_length(v), &n);
    if (!r->image) return bad(err, 400, "image is not valid base64");
    if (n > lim->max_upload) return bad(err, 413, "the image is larger than the upload limit");
    r->image_len = n, r->has_image = 1;
    return 0;
}

static int json_fields(ml_sreq *r, json_t *j, const ml_sreq_limits *lim, ml_error *err) {
    long long k = r->k, off = 0, id = -1;
    int rc;
    if ((rc = json_int(json_object_get(j, "k"), "k", 1, lim->max_k, &k, err)) ||
        (rc = json_int(json_object_get(j, "offset"), "offset", 0, lim->max_k, &off, err)) ||
        (rc = json_int(json_object_get(j, "image_id"), "image_id", 0, 9000000000000000LL, &id, err)) ||
        (rc = json_image(r, json_object_get(j, "image"), lim, err)))
        return rc;
    r->k = (int)k, r->offset = (int)off, r->image_id = id;
    json_t *t = json_object_get(j, "text"), *m = json_object_get(j, "min_score"),
           *p = json_object_get(j, "prefix");
    if (t && !json_is_null(t)) {
        if (!json_is_string(t)) return bad(err, 400, "text must be a string");
        /* "" means no instruction, as an empty form field does. */
        if (json_string_length(t) && (rc = set_text(r, json_string_value(t), json_string_length(t), lim, err))) return rc;
    }
    if (m && !json_is_null(m)) {
        if (!json_is_number(m)) return bad(err, 400, "min_score must be a number between -2 and 2");
        r->min_score = json_number_value(m);
    }
    if (p && !json_is_null(p)) {
        if (!json_is_string(p)) return bad(err, 400, "prefix must be a string");
        if (!(r->prefix = strdup(json_string_value(p)))) return bad(err, 500, "out of memory");
    }
    return 0;
}

int ml_sreq_parse_json(ml_sreq *r, const char *body, size_t len, const ml_sreq_limits *lim,
                       ml_error *err) {
    json_error_t je;
    /* jansson refuses invalid UTF-8 and embedded NULs in strings. */
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        ml_fail(err, "the body is not valid JSON (%s, at byte %d)", je.text, je.position);
        return 400;
    }
    int rc = json_is_object(j) ? json_fields(r, j, lim, err)
                               : bad(err, 400, "the body must be a JSON object");
    json_decref(j);
    return rc ? rc : check_ranges(r, lim, err);
}

/* ---- multipart -------------------------------------------------------- */

static int append_field(char **dst, const char *key, const char *data, uint64_t off, size_t size,
                        ml_error *err) {
    size_t have = *dst ? strlen(*dst) : 0;
    if (off != have || have + size > ML_SREQ_FIELD_MAX) {
        ml_fail(err, "form field '%s' is too long", key);
        return 400;
    }
    if (memchr(data, 0, size)) {
        ml_fail(err, "form field '%s' contains a NUL byte", key);
        return 400;
    }
    char *p = realloc(*dst, have + size + 1);
    if (!p) return bad(err, 500, "out of memory");
    memcpy(p + have, data, size), p[have + size] = 0;
    *dst = p;
    return 0;
}

static int append_image(ml_sreq *r, const char *data, size_t size, const ml_sreq_limits *lim,
                        ml_error *err) {
    if (r->image_len + size > lim->max_upload)
        return bad(err, 413, "the image is larger than the upload limit");
    if (r->image_len + size > r->image_cap) {
        size_t cap = (r->image_len + size) * 2;
        uint8_t *p = realloc(r->image, cap);
        if (!p) return bad(err, 500, "out of memory");
        r->image = p, r->image_cap = cap;
    }
    if (size) memcpy(r->image + r->image_len, data, size);
    r->image_len += size, r->has_image = 1;
    return 0;
}

int ml_sreq_form_chunk(ml_sreq *r, const char *key, const char *filename, const char *data,
                       uint64_t off, size_t size, const ml_sreq_limits *lim, ml_error *err) {
    (void)filename;
    if (!key) return 0;
    if (!strcmp(key, "image")) return append_image(r, data, size, lim, err);
    if (!strcmp(key, "text")) {
        /* The instruction may arrive in pieces: collect, validate at the end. */
        if (off + size > lim->max_text) {
            ml_fail(err, "the instruction is longer than %zu bytes", lim->max_text);
            return 413;
        }
        return append_field(&r->text, key, data, off, size, err);
    }
    char **dst = !strcmp(key, "k") ? &r->f_k : !strcmp(key, "offset") ? &r->f_offset
               : !strcmp(key, "min_score") ? &r->f_min : !strcmp(key, "image_id") ? &r->f_id
               : !strcmp(key, "prefix") ? &r->prefix : NULL;
    return dst ? append_field(dst, key, data, off, size, err) : 0; /* unknown fields: ignored */
}

static int form_number(const char *s, const char *name, double lo, double hi, double *out,
                       ml_error *err) {
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !(x >= lo && x <= hi)) {
        ml_fail(err, "%s must be a number between %g and %g", name, lo, hi);
        return 400;
    }
    *out = x;
    return 0;
}

static int form_int(const char *s, const char *name, long long lo, long long hi, long long *out,
                    ml_error *err) {
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi) {
        ml_fail(err, "%s must be an integer between %lld and %lld", name, lo, hi);
        return 400;
    }
    *out = x;
    return 0;
}

int ml_sreq_finish_form(ml_sreq *r, const ml_sreq_limits *lim, ml_error *err) {
    long long k = r->k, off = 0, id = -1;
    double ms = r->min_score;
    int rc;
    if ((rc = form_int(r->f_k, "k", 1, lim->max_k, &k, err)) ||
        (rc = form_int(r->f_offset, "offset", 0, lim->max_k, &off, err)) ||
        (rc = form_int(r->f_id, "image_id", 0, 9000000000000000LL, &id, err)) ||
        (rc = form_number(r->f_min, "min_score", -2, 2, &ms, err)))
        return rc;
    r->k = (int)k, r->offset = (int)off, r->image_id = id, r->min_score = ms;
    if (r->prefix && !ml_utf8_valid(r->prefix, strlen(r->prefix)))
        return bad(err, 400, "prefix is not valid UTF-8 text");
    if (r->text) {
        /* An empty text field from a form means "no instruction". */
        char *t = r->text;
        r->text = NULL;
        if (*t && (rc = set_text(r, t, strlen(t), lim, err))) return free(t), rc;
        free(t);
    }
    /* A file input left empty still sends a zero-length part. */
    if (r->has_image && r->image_len == 0) r->has_image = 0;
    return check_ranges(r, lim, err);
}
