/* npy.c - NumPy .npy format, version 1.0 written, 1.0-3.0 read.
 * Layout: "\x93NUMPY", major, minor, header length (u16 LE in 1.x, u32 LE
 * later), a Python dict literal padded with spaces to a multiple of 64
 * bytes and ended by '\n', then the raw data. */
#include "io/npy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"

int ml_npy_write_f32(const char *path, const float *data, int64_t rows, int64_t cols,
                     ml_error *err) {
    if (rows < 0 || cols < 0) return ml_fail(err, "%s: bad npy shape", path);
    char dict[128];
    int n = snprintf(dict, sizeof dict,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%" PRId64 ", %" PRId64
                     "), }",
                     rows, cols);
    /* 10 bytes of preamble + dict + padding + '\n' = multiple of 64. */
    size_t total = ((size_t)10 + (size_t)n + 1 + 63) / 64 * 64, hlen = total - 10;
    char head[256];
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (char)(hlen & 0xff);
    head[9] = (char)(hlen >> 8);
    memcpy(head + 10, dict, (size_t)n);
    memset(head + 10 + n, ' ', hlen - (size_t)n - 1);
    head[total - 1] = '\n';
    FILE *f = fopen(path, "wb");
    if (!f) return ml_fail(err, "%s: cannot create: %s", path, strerror(errno));
    size_t count = (size_t)rows * (size_t)cols; /* floats are little-endian on our targets */
    int ok = fwrite(head, 1, total, f) == total && fwrite(data, sizeof(float), count, f) == count;
    if (fclose(f) != 0) ok = 0;
    return ok ? 0 : ml_fail(err, "%s: write failed: %s", path, strerror(errno));
}

/* Parses the dict of a .npy header: dtype, order, shape. */
static int npy_parse_header(const char *h, char *dtype_char, int *itemsize, int64_t *shape,
                            int *ndim, ml_error *err) {
    const char *d = strstr(h, "'descr':");
    const char *fo = strstr(h, "'fortran_order':");
    const char *sh = strstr(h, "'shape':");
    if (!d || !fo || !sh) return ml_fail(err, "malformed npy header");
    d = strchr(d + 8, '\'');
    if (!d) return ml_fail(err, "malformed npy descr");
    if (!strncmp(d, "'<f4'", 5)) *dtype_char = 'f', *itemsize = 4;
    else if (!strncmp(d, "'<f8'", 5)) *dtype_char = 'f', *itemsize = 8;
    else if (!strncmp(d, "'|u1'", 5)) *dtype_char = 'u', *itemsize = 1;
    else return ml_fail(err, "unsupported npy dtype %.8s", d);
    if (strncmp(fo + 16, " False", 6) != 0) return ml_fail(err, "Fortran-order npy not supported");
    const char *p = strchr(sh, '(');
    if (!p) return ml_fail(err, "malformed npy shape");
    *ndim = 0;
    for (p++;;) {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0 || *ndim == ML_NPY_MAX_DIMS) return ml_fail(err, "bad npy shape");
        shape[(*ndim)++] = v;
        p = end;
    }
    return 0;
}

static int npy_read_file(FILE *f, char *dtype_char, int *itemsize, int64_t *shape, int *ndim,
                         void **data, ml_error *err) {
    unsigned char pre[12];
    if (fread(pre, 1, 8, f) != 8 || memcmp(pre, "\x93NUMPY", 6) != 0)
        return ml_fail(err, "not an npy file");
    size_t lenbytes = pre[6] == 1 ? 2 : 4;
    if (fread(pre + 8, 1, lenbytes, f) != lenbytes) return ml_fail(err, "truncated npy header");
    size_t hlen = pre[8] | (size_t)pre[9] << 8;
    if (lenbytes == 4) hlen |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    if (hlen > (1u << 20)) return ml_fail(err, "npy header too long");
    char *h = ml_malloc(hlen + 1, err);
    if (!h) return -1;
    int rc = fread(h, 1, hlen, f) == hlen ? 0 : ml_fail(err, "truncated npy header");
    h[hlen] = 0;
    if (rc == 0) rc = npy_parse_header(h, dtype_char, itemsize, shape, ndim, err);
    free(h);
    if (rc != 0) return -1;
    size_t count = 1;
    for (int i = 0; i < *ndim; i++) {
        if (shape[i] > 0 && count > ((size_t)1 << 40) / (size_t)shape[i])
            return ml_fail(err, "npy array too large");
        count *= (size_t)shape[i];
    }
    *data = ml_malloc(count * (size_t)*itemsize, err);
    if (!*data) return -1;
    if (fread(*data, (size_t)*itemsize, count, f) != count) {
        free(*data);
        *data = NULL;
        return ml_fail(err, "truncated npy data");
    }
    return 0;
}

int ml_npy_read(const char *path, char *dtype_char, int *itemsize, int64_t *shape, int *ndim,
                void **data, ml_error *err) {
    *data = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ml_fail(err, "%s: cannot open: %s", path, strerror(errno));
    int rc = npy_read_file(f, dtype_char, itemsize, shape, ndim, data, err);
    fclose(f);
    if (rc != 0) ml_fail_prefix(err, "%s", path);
    return rc;
}
