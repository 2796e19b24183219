/* request.h - the body of POST /api/search and /api/embed, from JSON or
 * multipart/form-data, validated into one query description. */
#ifndef ML_SERVE_REQUEST_H
#define ML_SERVE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

/* Longest accepted non-file form field (k, offset, ids, ...). */
#define ML_SREQ_FIELD_MAX 4096

typedef struct ml_sreq {
    uint8_t *image;       /* uploaded or base64-decoded bytes (owned) */
    size_t image_len;
    int has_image;
    char *text;           /* instruction (owned; NULL: none) */
    size_t text_len;
    long long image_id;   /* -1: none */
    int k, offset;
    double min_score;     /* -INFINITY: none */
    char *prefix;         /* owned; NULL: all */
    /* multipart assembly: raw field values, parsed by ml_sreq_finish_form */
    char *f_k, *f_offset, *f_min, *f_id;
    size_t image_cap;
} ml_sreq;

/* Limits that the parser enforces (the rest are the handler's). */
typedef struct ml_sreq_limits {
    size_t max_upload, max_text;
    int max_k; /* k + offset */
} ml_sreq_limits;

void ml_sreq_init(ml_sreq *r);
void ml_sreq_free(ml_sreq *r);

/* Parses a JSON body.  On failure returns the HTTP status (400, 413) and
 * writes a plain-words message to err. */
int ml_sreq_parse_json(ml_sreq *r, const char *body, size_t len, const ml_sreq_limits *lim,
                       ml_error *err);
/* Multipart: append a chunk of field `key` at offset `off`.  Returns 0 or an
 * HTTP status (400, 413). */
int ml_sreq_form_chunk(ml_sreq *r, const char *key, const char *filename, const char *data,
                       uint64_t off, size_t size, const ml_sreq_limits *lim, ml_error *err);
/* After the last chunk: validates the collected fields.  0 or a status. */
int ml_sreq_finish_form(ml_sreq *r, const ml_sreq_limits *lim, ml_error *err);

#endif
