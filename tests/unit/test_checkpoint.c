/* test_checkpoint.c - pickle / msgpack / .pkl / .mlens readers and writer.
 *
 * With no arguments: self-contained checks on buffers built byte by byte.
 * With `--pkl-dir DIR`: also loads the .pkl files tests/t_checkpoint_py.sh
 * generated with Python and compares them with DIR/manifest.txt. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "io/msgpack.h"
#include "io/native.h"
#include "io/pickle.h"
#include "io/tensors.h"

/* ---- a growable byte buffer with msgpack / pickle emitters ----------- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put1(buf *b, unsigned v) {
    uint8_t c = (uint8_t)v;
    put(b, &c, 1);
}
static void put_be(buf *b, uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--) put1(b, (unsigned)(v >> (8 * i)) & 0xff);
}
static void put_le(buf *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) put1(b, (unsigned)(v >> (8 * i)) & 0xff);
}

static void mp_map(buf *b, unsigned n) {
    if (n < 16) put1(b, 0x80 | n);
    else { put1(b, 0xde); put_be(b, n, 2); }
}
static void mp_arr(buf *b, unsigned n) { put1(b, 0x90 | n); }
static void mp_str(buf *b, const char *s) {
    size_t n = strlen(s);
    if (n < 32) put1(b, 0xa0 | (unsigned)n);
    else { put1(b, 0xd9); put1(b, (unsigned)n); }
    put(b, s, n);
}
static void mp_uint(buf *b, uint64_t v) {
    if (v < 128) put1(b, (unsigned)v);
    else { put1(b, 0xcf); put_be(b, v, 8); }
}
static void mp_bin(buf *b, const void *p, size_t n) {
    put1(b, 0xc6);
    put_be(b, n, 4);
    put(b, p, n);
}
static void mp_ext(buf *b, int type, const buf *payload) {
    put1(b, 0xc9);
    put_be(b, payload->n, 4);
    put1(b, (unsigned)type);
    put(b, payload->p, payload->n);
}
/* Flax's ndarray leaf: ext(type, msgpack([shape, dtype, bytes])). */
static void mp_nd(buf *b, int type, int ndim, const uint64_t *shape, const char *dtype,
                  const void *data, size_t n) {
    buf in = {0};
    mp_arr(&in, 3);
    mp_arr(&in, (unsigned)ndim);
    for (int i = 0; i < ndim; i++) mp_uint(&in, shape[i]);
    mp_str(&in, dtype);
    mp_bin(&in, data, n);
    mp_ext(b, type, &in);
    free(in.p);
}

static const ml_tensor *find(const ml_tensor_set *s, const char *name) {
    const ml_tensor *t = ml_tensor_set_find(s, name);
    CHECK_MSG(t != NULL, "missing tensor %s", name);
    return t;
}

static int contains(const char *msg, const char *needle) { return strstr(msg, needle) != NULL; }

static char tmpdir[4096];

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

/* ---- dtype conversions ------------------------------------------------ */

static double f16_reference(unsigned h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static void test_dtypes(void) {
    CHECK(ml_dtype_size(ML_F32) == 4 && ml_dtype_size(ML_BF16) == 2 && ml_dtype_size(ML_U8) == 1);
    CHECK(strcmp(ml_dtype_name(ML_BF16), "bfloat16") == 0);
    int bad = 0;
    for (unsigned h = 0; h < 65536; h++) {
        float got = ml_f16_to_f32((uint16_t)h);
        double want = f16_reference(h);
        if (isnan(want) ? !isnan(got) : ((double)got != want || !signbit(got) != !signbit(want))) bad++;
    }
    CHECK_MSG(bad == 0, "%d float16 values converted wrongly", bad);
    CHECK(ml_f16_to_f32(0x0001) == ldexpf(1, -24)); /* smallest subnormal */
    CHECK(ml_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(isinf(ml_f16_to_f32(0xfc00)) && ml_f16_to_f32(0xfc00) < 0);
    CHECK(signbit(ml_f16_to_f32(0x8000)) && ml_f16_to_f32(0x8000) == 0.0f);
    CHECK(ml_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(ml_bf16_to_f32(0xc049) == -3.140625f);
    CHECK(ml_bf16_to_f32(0x0001) == ldexpf(1, -133)); /* bf16 subnormal */
    CHECK(isinf(ml_bf16_to_f32(0x7f80)) && isnan(ml_bf16_to_f32(0x7fc1)));
    uint16_t raw[3] = {0x3c00, 0xc000, 0x3555};
    ml_tensor t = {.name = "t", .dtype = ML_F16, .ndim = 1, .shape = {3}, .data = raw, .nbytes = 6};
    CHECK(ml_tensor_get_f32(&t, 0) == 1.0f && ml_tensor_get_f32(&t, 1) == -2.0f);
    CHECK(fabsf(ml_tensor_get_f32(&t, 2) - 0.33325195f) < 1e-7f);
    t.dtype = ML_BF16;
    CHECK(ml_tensor_get_f32(&t, 0) == ml_bf16_to_f32(0x3c00));
    CHECK(ml_tensor_numel(&t) == 3);
}

/* ---- pickle ------------------------------------------------------------ */

/* A pickle of `payload` in the shape protocol P uses (built byte by byte). */
static void pkl_build(buf *b, int proto, const uint8_t *payload, size_t n) {
    put1(b, 0x80);
    put1(b, (unsigned)proto);
    if (proto == 2) { /* _codecs.encode(str, 'latin1') */
        buf u = {0};
        for (size_t i = 0; i < n; i++) {
            if (payload[i] < 0x80) put1(&u, payload[i]);
            else { put1(&u, 0xc0 | (payload[i] >> 6)); put1(&u, 0x80 | (payload[i] & 0x3f)); }
        }
        put(b, "c_codecs\nencode\n", 16);
        put1(b, 'q'); put1(b, 0);
        put1(b, 'X'); put_le(b, u.n, 4); put(b, u.p, u.n);
        put1(b, 'q'); put1(b, 1);
        put1(b, 'X'); put_le(b, 6, 4); put(b, "latin1", 6);
        put1(b, 'q'); put1(b, 2);
        put1(b, 0x86);
        put1(b, 'r'); put_le(b, 3, 4); /* LONG_BINPUT */
        put1(b, 'R');
        put1(b, 'q'); put1(b, 4);
        free(u.p);
    } else if (proto == 3) {
        put1(b, 'B'); put_le(b, n, 4); put(b, payload, n);
        put1(b, 'q'); put1(b, 0);
    } else {
        int small = n < 256 && proto == 4;
        size_t body = (small ? 2 : 9) + n + 1;
        put1(b, 0x95); put_le(b, body, 8); /* FRAME */
        if (small) { put1(b, 'C'); put1(b, (unsigned)n); }
        else { put1(b, proto == 5 ? 0x96 : 0x8e); put_le(b, n, 8); } /* BYTEARRAY8 / BINBYTES8 */
        put(b, payload, n);
        put1(b, 0x94); /* MEMOIZE */
    }
    put1(b, '.');
}

static void test_pickle_valid(void) {
    uint8_t payload[300];
    for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(i * 7 + 3);
    const size_t sizes[] = {0, 5, sizeof payload};
    for (int proto = 2; proto <= 5; proto++) {
        for (size_t si = 0; si < 3; si++) {
            size_t n = sizes[si];
            if (proto == 2 && n == 0) continue; /* python uses bytes() for that, below */
            buf b = {0};
            pkl_build(&b, proto, payload, n);
            const uint8_t *p;
            size_t pn;
            uint8_t *owned = NULL;
            ml_error err = {{0}};
            int rc = ml_pickle_unwrap_bytes(b.p, b.n, &p, &pn, &owned, &err);
            CHECK_MSG(rc == 0, "proto %d n %zu: %s", proto, n, err.msg);
            CHECK(rc != 0 || (pn == n && (n == 0 || memcmp(p, payload, n) == 0)));
            if (proto == 2) CHECK(owned != NULL && p == owned);
            else CHECK(owned == NULL && p >= b.p && p + pn <= b.p + b.n); /* zero copy */
            /* Every truncation must fail cleanly. */
            int trunc_ok = 1;
            for (size_t k = 0; k < b.n; k++) {
                uint8_t *cut = malloc(k ? k : 1); /* exact size: ASan/valgrind catch overreads */
                memcpy(cut, b.p, k);
                uint8_t *o2 = NULL;
                if (ml_pickle_unwrap_bytes(cut, k, &p, &pn, &o2, &err) == 0) trunc_ok = 0;
                free(o2);
                free(cut);
            }
            CHECK_MSG(trunc_ok, "proto %d: a truncated pickle was accepted", proto);
            free(owned);
            free(b.p);
        }
    }
    /* protocol 2 spells b'' as __builtin__.bytes() */
    static const uint8_t empty2[] = "\x80\x02" "c__builtin__\nbytes\nq\x00)Rq\x01.";
    const uint8_t *p;
    size_t pn = 99;
    uint8_t *owned = NULL;
    ml_error err = {{0}};
    CHECK(ml_pickle_unwrap_bytes(empty2, sizeof empty2 - 1, &p, &pn, &owned, &err) == 0 && pn == 0);
    /* latin-1 form without a place for the decoded buffer is refused, not leaked */
    buf b = {0};
    pkl_build(&b, 2, payload, 10);
    CHECK(ml_pickle_unwrap_bytes(b.p, b.n, &p, &pn, NULL, &err) == -1);
    free(b.p);
}

static int pkl_fails(const void *data, size_t n, const char *needle) {
    const uint8_t *p;
    size_t pn;
    uint8_t *owned = NULL;
    ml_error err = {{0}};
    int rc = ml_pickle_unwrap_bytes(data, n, &p, &pn, &owned, &err);
    free(owned);
    if (rc == 0) return 0;
    if (!contains(err.msg, needle)) {
        fprintf(stderr, "message '%s' lacks '%s'\n", err.msg, needle);
        return 0;
    }
    return 1;
}

static void test_pickle_hostile(void) {
    static const char evil[] = "\x80\x02" "cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.";
    CHECK(pkl_fails(evil, sizeof evil - 1, "refusing GLOBAL 'os system' at offset 2"));
    static const char proto1[] = "\x80\x01" "C\x01x.";
    CHECK(pkl_fails(proto1, sizeof proto1 - 1, "protocol 1"));
    static const char proto6[] = "\x80\x06" "C\x01x.";
    CHECK(pkl_fails(proto6, sizeof proto6 - 1, "protocol 6"));
    static const char noproto[] = "C\x01x.";
    CHECK(pkl_fails(noproto, sizeof noproto - 1, "no PROTO"));
    static const char frame_long[] = "\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00" "C\x01x.";
    CHECK(pkl_fails(frame_long, sizeof frame_long - 1, "FRAME longer"));
    static const char past_end[] = "\x80\x03" "B\xff\xff\xff\x7fxx.";
    CHECK(pkl_fails(past_end, sizeof past_end - 1, "past the end"));
    static const char past_end8[] = "\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xffxx.";
    CHECK(pkl_fails(past_end8, sizeof past_end8 - 1, "past the end"));
    static const char two[] = "\x80\x04" "C\x01xC\x01y.";
    CHECK(pkl_fails(two, sizeof two - 1, "STOP without exactly one"));
    static const char list[] = "\x80\x04]\x94.";
    CHECK(pkl_fails(list, sizeof list - 1, "unsupported opcode 0x5d at offset 2"));
    static const char get[] = "\x80\x04" "C\x01x\x94h\x00.";
    CHECK(pkl_fails(get, sizeof get - 1, "opcode 0x68"));
    static const char nonlatin[] = "\x80\x02" "c_codecs\nencode\nX\x03\x00\x00\x00\xe2\x82\xac"
                                   "X\x06\x00\x00\x00latin1\x86R.";
    CHECK(pkl_fails(nonlatin, sizeof nonlatin - 1, "not latin-1"));
    static const char utf8[] = "\x80\x02" "c_codecs\nencode\nX\x01\x00\x00\x00" "a"
                               "X\x05\x00\x00\x00utf-8\x86R.";
    CHECK(pkl_fails(utf8, sizeof utf8 - 1, "TUPLE2 other than"));
    static const char reduce_bytes[] = "\x80\x02" "c__builtin__\nbytes\nC\x01xR.";
    CHECK(pkl_fails(reduce_bytes, sizeof reduce_bytes - 1, "REDUCE other than"));
    static const char memo_empty[] = "\x80\x04\x94.";
    CHECK(pkl_fails(memo_empty, sizeof memo_empty - 1, "empty stack"));
    CHECK(pkl_fails("", 0, "truncated"));
}

/* ---- msgpack ----------------------------------------------------------- */

static const float F6[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.5f, 100.0f};

/* {"params": {"a": {"k": f32[2,3]}, "b": bf16[2], "s": scalar, "e": {}, "h": f16[3],
 *             "d": f64[2], "i": i32[2], "n": 7}} */
static void build_tree(buf *b) {
    uint64_t s23[2] = {2, 3}, s2[1] = {2}, s3[1] = {3};
    uint16_t bf[2] = {0x3f80, 0xc049}, hf[3] = {0x3c00, 0x0001, 0xfc00};
    double d[2] = {0.1, -1e300};
    int32_t iv[2] = {-5, 123456};
    float sc = 2.5f;
    mp_map(b, 1);
    mp_str(b, "params");
    mp_map(b, 8);
    mp_str(b, "a"); mp_map(b, 1); mp_str(b, "k"); mp_nd(b, 1, 2, s23, "float32", F6, sizeof F6);
    mp_str(b, "b"); mp_nd(b, 1, 1, s2, "bfloat16", bf, sizeof bf);
    mp_str(b, "s"); mp_nd(b, 3, 0, NULL, "float32", &sc, 4);
    mp_str(b, "e"); mp_map(b, 0);
    mp_str(b, "h"); mp_nd(b, 1, 1, s3, "float16", hf, sizeof hf);
    mp_str(b, "d"); mp_nd(b, 1, 1, s2, "float64", d, sizeof d);
    mp_str(b, "i"); mp_nd(b, 1, 1, s2, "int32", iv, sizeof iv);
    mp_str(b, "n"); mp_uint(b, 7);
}

static void check_tree(const ml_tensor_set *s, const uint8_t *base, size_t len) {
    CHECK(s->count == 7);
    const ml_tensor *t = find(s, "a/k");
    if (t) {
        CHECK(t->dtype == ML_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
        CHECK((const uint8_t *)t->data >= base && (const uint8_t *)t->data < base + len);
        for (int i = 0; i < 6; i++) CHECK(ml_tensor_get_f32(t, i) == F6[i]);
    }
    if ((t = find(s, "b"))) CHECK(t->dtype == ML_BF16 && ml_tensor_get_f32(t, 1) == -3.140625f);
    if ((t = find(s, "s"))) CHECK(t->ndim == 0 && ml_tensor_numel(t) == 1 && ml_tensor_get_f32(t, 0) == 2.5f);
    if ((t = find(s, "h")))
        CHECK(t->dtype == ML_F16 && ml_tensor_get_f32(t, 1) == ldexpf(1, -24) &&
              isinf(ml_tensor_get_f32(t, 2)));
    if ((t = find(s, "d")))
        CHECK(t->dtype == ML_F32 && ml_tensor_get_f32(t, 0) == 0.1f && isinf(ml_tensor_get_f32(t, 1)));
    if ((t = find(s, "i"))) CHECK(t->dtype == ML_F32 && ml_tensor_get_f32(t, 1) == 123456.0f);
    if ((t = find(s, "n"))) CHECK(t->ndim == 0 && ml_tensor_get_f32(t, 0) == 7.0f);
    CHECK(ml_tensor_set_find(s, "e") == NULL && ml_tensor_set_find(s, "params/b") == NULL);
}

static void test_msgpack_valid(void) {
    buf b = {0};
    build_tree(&b);
    ml_tensor_set s = {0};
    ml_error err = {{0}};
    CHECK_MSG(ml_flax_msgpack_to_tensors(b.p, b.n, &s, &err) == 0, "%s", err.msg);
    check_tree(&s, b.p, b.n);
    ml_tensor_set_free(&s);
    ml_tensor_set_free(&s); /* idempotent */

    /* Chunked array (keys in non-canonical order), without a params level. */
    buf c = {0};
    uint64_t s4[1] = {4}, s2[1] = {2};
    mp_map(&c, 2);
    mp_str(&c, "x");
    mp_map(&c, 3);
    mp_str(&c, "chunks"); mp_map(&c, 2);
    mp_str(&c, "1"); mp_nd(&c, 1, 1, s2, "float32", F6 + 4, 8);
    mp_str(&c, "0"); mp_nd(&c, 1, 1, s4, "float32", F6, 16);
    mp_str(&c, "shape"); mp_map(&c, 2); mp_str(&c, "1"); mp_uint(&c, 3); mp_str(&c, "0"); mp_uint(&c, 2);
    mp_str(&c, "__msgpack_chunked_array__"); put1(&c, 0xc3);
    mp_str(&c, "y"); mp_nd(&c, 1, 1, s2, "uint8", "\x01\xff", 2);
    CHECK_MSG(ml_flax_msgpack_to_tensors(c.p, c.n, &s, &err) == 0, "%s", err.msg);
    const ml_tensor *t = find(&s, "x");
    if (t) {
        CHECK(t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->nbytes == 24);
        for (int i = 0; i < 6; i++) CHECK(ml_tensor_get_f32(t, i) == F6[i]);
    }
    if ((t = find(&s, "y"))) CHECK(t->dtype == ML_U8 && ml_tensor_get_f32(t, 1) == 255.0f);
    ml_tensor_set_free(&s);
    free(c.p);

    /* every truncation of a valid tree fails cleanly */
    int trunc_ok = 1;
    for (size_t k = 0; k < b.n; k++) {
        uint8_t *cut = malloc(k ? k : 1);
        memcpy(cut, b.p, k);
        if (ml_flax_msgpack_to_tensors(cut, k, &s, &err) == 0) trunc_ok = 0;
        CHECK(s.count == 0 && s.items == NULL);
        free(cut);
    }
    CHECK_MSG(trunc_ok, "a truncated msgpack tree was accepted");
    free(b.p);
}

/* Expects the tree {"params": {"w": <value written by fn>}} to fail naming "w". */
static int mp_fails(const buf *b, const char *needle) {
    ml_tensor_set s = {0};
    ml_error err = {{0}};
    int rc = ml_flax_msgpack_to_tensors(b->p, b->n, &s, &err);
    ml_tensor_set_free(&s);
    if (rc == 0) {
        fprintf(stderr, "accepted; expected '%s'\n", needle);
        return 0;
    }
    if (!contains(err.msg, needle)) {
        fprintf(stderr, "message '%s' lacks '%s'\n", err.msg, needle);
        return 0;
    }
    return 1;
}

static void leaf_tree(buf *b, const char *name) {
    b->n = 0;
    mp_map(b, 1);
    mp_str(b, "params");
    mp_map(b, 1);
    mp_str(b, name);
}

static void test_msgpack_hostile(void) {
    buf b = {0};
    float f[4] = {0};
    uint64_t giant[2] = {1ull << 20, 1ull << 30}, ovf[2] = {1ull << 62, 16}, s3[1] = {3};
    uint64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};

    leaf_tree(&b, "w"); mp_nd(&b, 1, 2, giant, "float32", f, sizeof f);
    CHECK(mp_fails(&b, "w: shape needs"));
    leaf_tree(&b, "w"); mp_nd(&b, 1, 2, ovf, "float32", f, sizeof f);
    CHECK(mp_fails(&b, "w: shape overflows"));
    leaf_tree(&b, "w"); mp_nd(&b, 1, 1, s3, "float32", f, sizeof f);
    CHECK(mp_fails(&b, "w: shape needs 3 elements"));
    leaf_tree(&b, "w"); mp_nd(&b, 1, 9, nine, "float32", f, 4);
    CHECK(mp_fails(&b, "w: 9 dimensions"));
    leaf_tree(&b, "w"); mp_nd(&b, 1, 1, s3, "complex64", f, 12);
    CHECK(mp_fails(&b, "w: unsupported dtype 'complex64'"));
    leaf_tree(&b, "w"); mp_nd(&b, 3, 1, s3, "float32", f, 12);
    CHECK(mp_fails(&b, "w: numpy scalar with 1 dimensions"));
    leaf_tree(&b, "w"); mp_nd(&b, 2, 1, s3, "float32", f, 12);
    CHECK(mp_fails(&b, "w: unsupported ext type 2"));
    { /* ext payload that is not [shape, dtype, bytes] */
        buf in = {0};
        mp_arr(&in, 2); mp_arr(&in, 0); mp_str(&in, "float32");
        leaf_tree(&b, "w"); mp_ext(&b, 1, &in);
        CHECK(mp_fails(&b, "w: ndarray payload is not a 3-item array"));
        in.n = 0;
        mp_arr(&in, 3); mp_arr(&in, 0); mp_str(&in, "float32"); mp_bin(&in, f, 4); put1(&in, 0xc0);
        leaf_tree(&b, "w"); mp_ext(&b, 1, &in);
        CHECK(mp_fails(&b, "w: 1 stray bytes"));
        in.n = 0;
        mp_arr(&in, 3); put1(&in, 0x91); put1(&in, 0xff); mp_str(&in, "float32"); mp_bin(&in, f, 4);
        leaf_tree(&b, "w"); mp_ext(&b, 1, &in);
        CHECK(mp_fails(&b, "w: dimension 0 is not a non-negative integer"));
        free(in.p);
    }
    leaf_tree(&b, "w"); put1(&b, 0xdb); put_be(&b, 0xfffffff0u, 4); /* str32 past the end */
    CHECK(mp_fails(&b, "runs past the end"));
    leaf_tree(&b, "w"); put1(&b, 0xdf); put_be(&b, 0xffffffffu, 4); /* map32 claiming 4G entries */
    CHECK(mp_fails(&b, "exceeds the data"));
    leaf_tree(&b, "w"); put1(&b, 0xc1);
    CHECK(mp_fails(&b, "invalid byte 0xc1"));
    leaf_tree(&b, "w"); mp_str(&b, "text");
    CHECK(mp_fails(&b, "w: unsupported str value"));
    leaf_tree(&b, "w"); put1(&b, 0xc0);
    CHECK(mp_fails(&b, "w: unsupported nil value"));
    /* non-string key */
    b.n = 0; mp_map(&b, 1); mp_str(&b, "params"); mp_map(&b, 1); mp_str(&b, "m");
    mp_map(&b, 1); mp_uint(&b, 5); mp_uint(&b, 1);
    CHECK(mp_fails(&b, "m: map key is a int, not a string"));
    /* duplicates, including one made by a key with '/' */
    b.n = 0; mp_map(&b, 2);
    mp_str(&b, "a/b"); mp_uint(&b, 1);
    mp_str(&b, "a"); mp_map(&b, 1); mp_str(&b, "b"); mp_uint(&b, 2);
    CHECK(mp_fails(&b, "a/b: duplicate tensor name"));
    /* deep nesting: 100 levels */
    b.n = 0;
    for (int i = 0; i < 100; i++) { mp_map(&b, 1); mp_str(&b, "d"); }
    mp_uint(&b, 1);
    CHECK(mp_fails(&b, "nested deeper than 64"));
    /* deep arrays inside a value that is skipped by the chunk look-ahead */
    b.n = 0; mp_map(&b, 1); mp_str(&b, "m"); mp_map(&b, 2); mp_str(&b, "x");
    for (int i = 0; i < 100000; i++) put1(&b, 0x91);
    put1(&b, 0x01); mp_str(&b, "y"); mp_uint(&b, 1);
    CHECK(mp_fails(&b, "m/x: unsupported array value"));
    /* trailing garbage, non-map top level, params leaf */
    b.n = 0; mp_map(&b, 1); mp_str(&b, "x"); mp_uint(&b, 1); put1(&b, 0x01);
    CHECK(mp_fails(&b, "stray bytes after the tree"));
    b.n = 0; mp_arr(&b, 0);
    CHECK(mp_fails(&b, "top level is a array"));
    b.n = 0; mp_map(&b, 1); mp_str(&b, "params"); mp_uint(&b, 1);
    CHECK(mp_fails(&b, "params: a int, not a map"));
    /* chunked arrays: wrong total, missing chunk, bad marker */
    uint64_t s2[1] = {2};
    b.n = 0; mp_map(&b, 1); mp_str(&b, "c"); mp_map(&b, 3);
    mp_str(&b, "__msgpack_chunked_array__"); put1(&b, 0xc3);
    mp_str(&b, "shape"); mp_map(&b, 1); mp_str(&b, "0"); mp_uint(&b, 5);
    mp_str(&b, "chunks"); mp_map(&b, 1); mp_str(&b, "0"); mp_nd(&b, 1, 1, s2, "float32", f, 8);
    CHECK(mp_fails(&b, "c: chunked array: shape does not match"));
    b.n = 0; mp_map(&b, 1); mp_str(&b, "c"); mp_map(&b, 3);
    mp_str(&b, "__msgpack_chunked_array__"); put1(&b, 0xc3);
    mp_str(&b, "shape"); mp_map(&b, 1); mp_str(&b, "0"); mp_uint(&b, 2);
    mp_str(&b, "chunks"); mp_map(&b, 1); mp_str(&b, "1"); mp_nd(&b, 1, 1, s2, "float32", f, 8);
    CHECK(mp_fails(&b, "c: chunked array: index 1 out of range"));
    b.n = 0; mp_map(&b, 1); mp_str(&b, "c"); mp_map(&b, 1);
    mp_str(&b, "__msgpack_chunked_array__"); put1(&b, 0xc2);
    CHECK(mp_fails(&b, "c: chunked array: marker is not true"));
    free(b.p);
}

/* ---- .pkl files --------------------------------------------------------- */

static void test_pkl_file(void) {
    buf mp = {0}, pk = {0};
    build_tree(&mp);
    char path[4200];
    for (int proto = 2; proto <= 5; proto++) {
        pk.n = 0;
        pkl_build(&pk, proto, mp.p, mp.n);
        snprintf(path, sizeof path, "%s/p%d.pkl", tmpdir, proto);
        write_file(path, pk.p, pk.n);
        ml_tensor_set s = {0};
        ml_error err = {{0}};
        CHECK_MSG(ml_checkpoint_load_pkl(path, &s, &err) == 0, "%s", err.msg);
        if (s.count) {
            const ml_tensor *t = find(&s, "a/k");
            const uint8_t *base = proto == 2 ? (const uint8_t *)s.owned[0] : s.file.data;
            size_t len = proto == 2 ? mp.n : s.file.size;
            check_tree(&s, base, len);
            CHECK(t && (proto == 2 || s.file.mapped));
        }
        ml_tensor_set_free(&s);
    }
    /* a damaged file: error starts with the path */
    pk.n = 0;
    pkl_build(&pk, 4, mp.p, mp.n - 3);
    snprintf(path, sizeof path, "%s/bad.pkl", tmpdir);
    write_file(path, pk.p, pk.n);
    ml_tensor_set s = {0};
    ml_error err = {{0}};
    CHECK(ml_checkpoint_load_pkl(path, &s, &err) == -1 && strncmp(err.msg, path, strlen(path)) == 0);
    CHECK(s.count == 0 && s.file.data == NULL);
    CHECK(ml_checkpoint_load_pkl("/nonexistent/x.pkl", &s, &err) == -1 &&
          contains(err.msg, "/nonexistent/x.pkl"));
    write_file(path, "", 0);
    CHECK(ml_checkpoint_load_pkl(path, &s, &err) == -1 && contains(err.msg, "truncated"));
    free(mp.p);
    free(pk.p);
}

/* ---- native format ------------------------------------------------------ */

static void build_native_src(ml_tensor_set *s) {
    static const uint16_t hf[4] = {0x3c00, 0x0001, 0x7c00, 0xc000};
    static const uint16_t bf[3] = {0x3f80, 0xc049, 0x0001};
    static const uint8_t u8[5] = {1, 2, 3, 4, 250};
    static const float scalar = 42.0f;
    int64_t s23[2] = {2, 3}, s4[1] = {4}, s3[1] = {3}, s5[1] = {5}, s0[2] = {0, 7};
    ml_error err;
    ml_tensor_set_add(s, "clip/a", ML_F32, 2, s23, F6, sizeof F6, &err);
    ml_tensor_set_add(s, "clip/h", ML_F16, 1, s4, hf, sizeof hf, &err);
    ml_tensor_set_add(s, "clip/b", ML_BF16, 1, s3, bf, sizeof bf, &err);
    ml_tensor_set_add(s, "bytes", ML_U8, 1, s5, u8, sizeof u8, &err);
    ml_tensor_set_add(s, "scalar", ML_F32, 0, NULL, &scalar, 4, &err);
    ml_tensor_set_add(s, "empty", ML_F32, 2, s0, F6, 0, &err);
}

static int native_fails(const char *path, const char *needle) {
    ml_tensor_set s = {0};
    ml_error err = {{0}};
    int rc = ml_native_load(path, &s, &err);
    ml_tensor_set_free(&s);
    if (rc == 0) return 0;
    if (!contains(err.msg, needle) || strncmp(err.msg, path, strlen(path)) != 0) {
        fprintf(stderr, "message '%s' lacks '%s'\n", err.msg, needle);
        return 0;
    }
    return 1;
}

static uint8_t *read_all(const char *path, size_t *n) {
    ml_file_map m;
    ml_error err;
    if (ml_file_map_open(path, &m, &err) != 0) return NULL;
    uint8_t *p = malloc(m.size ? m.size : 1);
    memcpy(p, m.data, m.size);
    *n = m.size;
    ml_file_map_close(&m);
    return p;
}

static void check_native_contents(const ml_tensor_set *src, const ml_tensor_set *got) {
    CHECK(got->count == src->count + 2);
    for (size_t i = 0; i < src->count; i++) {
        const ml_tensor *a = &src->items[i], *b = find(got, a->name);
        if (!b) continue;
        CHECK(b->ndim == a->ndim && memcmp(b->shape, a->shape, sizeof a->shape[0] * (size_t)a->ndim) == 0);
        CHECK(b->dtype == (a->dtype == ML_U8 ? ML_U8 : ML_F32));
        CHECK(((uintptr_t)b->data & 63) == 0);
        int64_t n = ml_tensor_numel(a);
        for (int64_t k = 0; k < n; k++) {
            float x = ml_tensor_get_f32(a, k), y = ml_tensor_get_f32(b, k);
            CHECK_MSG(memcmp(&x, &y, 4) == 0, "%s[%lld] differs", a->name, (long long)k);
        }
    }
    const ml_tensor *c = find(got, ML_NATIVE_CONFIG_NAME), *v = find(got, ML_NATIVE_VOCAB_NAME);
    CHECK(c && c->dtype == ML_U8 && c->nbytes == 11 && memcmp(c->data, "{\"dim\":512}", 11) == 0);
    CHECK(v && v->nbytes == 4 && memcmp(v->data, "\x1f\x8b\x08\x00", 4) == 0);
}

static void test_native(void) {
    ml_tensor_set src = {0}, got = {0};
    ml_error err = {{0}};
    build_native_src(&src);
    char path[4200], path2[4200];
    snprintf(path, sizeof path, "%s/m.mlens", tmpdir);
    snprintf(path2, sizeof path2, "%s/m2.mlens", tmpdir);
    CHECK_MSG(ml_native_write(path, &src, "{\"dim\":512}", (const uint8_t *)"\x1f\x8b\x08\x00", 4, &err) == 0,
              "%s", err.msg);
    CHECK(access(path, F_OK) == 0 && ml_native_is_native(path) == 1);
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0); /* renamed away */
    CHECK_MSG(ml_native_load(path, &got, &err) == 0, "%s", err.msg);
    check_native_contents(&src, &got);
    /* Rewriting a loaded file with NULL blobs keeps its blobs. */
    CHECK_MSG(ml_native_write(path2, &got, NULL, NULL, 0, &err) == 0, "%s", err.msg);
    ml_tensor_set again = {0};
    CHECK_MSG(ml_native_load(path2, &again, &err) == 0, "%s", err.msg);
    CHECK(again.count == got.count);
    ml_tensor_set_free(&again);
    ml_tensor_set_free(&got);

    size_t n = 0;
    uint8_t *orig = read_all(path, &n);
    CHECK(orig && n > 64 && n % 64 == 0);
    if (!orig) return;
    /* truncation at every length: the in-memory loader must always fail */
    int trunc_ok = 1;
    for (size_t k = 0; k < n; k++) {
        uint8_t *cut = malloc(k ? k : 1);
        memcpy(cut, orig, k);
        ml_tensor_set s = {0};
        if (ml_native_load_mem(cut, k, &s, &err) == 0) trunc_ok = 0;
        ml_tensor_set_free(&s);
        free(cut);
    }
    CHECK_MSG(trunc_ok, "a truncated native file was accepted");
    write_file(path2, orig, n - 10);
    CHECK(native_fails(path2, "truncated"));
    /* a byte of the directory */
    uint8_t *bad = malloc(n);
    memcpy(bad, orig, n);
    bad[64 + 30] ^= 0x40;
    write_file(path2, bad, n);
    CHECK(native_fails(path2, "header/directory checksum mismatch"));
    /* a byte of the first tensor's data (its offset is at directory byte 0) */
    memcpy(bad, orig, n);
    uint64_t off = 0;
    for (int i = 0; i < 8; i++) off |= (uint64_t)orig[64 + i] << (8 * i);
    bad[off + 5] ^= 1;
    write_file(path2, bad, n);
    CHECK(native_fails(path2, "clip/a: data checksum mismatch"));
    /* a newer version (checked before the CRC so the message says so) */
    memcpy(bad, orig, n);
    bad[8] = 2;
    write_file(path2, bad, n);
    CHECK(native_fails(path2, "format version 2 is newer"));
    /* a foreign file */
    write_file(path2, "\x89PNG\r\n\x1a\n0000000000000000", 24);
    CHECK(native_fails(path2, "not a native .mlens file") && ml_native_is_native(path2) == 0);
    CHECK(ml_native_is_native("/nonexistent") == 0);
    free(bad);
    free(orig);
    /* writer refusals */
    CHECK(ml_native_write("/nonexistent/dir/x.mlens", &src, NULL, NULL, 0, &err) == -1 &&
          contains(err.msg, "cannot create"));
    ml_tensor_set_free(&src);
    unlink(path);
    unlink(path2);
}

/* ---- Python-generated files -------------------------------------------- */

/* Manifest lines: FILE NAME DTYPE NDIM D0 .. SUM, and "count FILE N". */
static int check_pkl_dir(const char *dir) {
    char mpath[4200], line[8192];
    snprintf(mpath, sizeof mpath, "%s/manifest.txt", dir);
    FILE *f = fopen(mpath, "r");
    CHECK_MSG(f != NULL, "cannot open %s", mpath);
    if (!f) return 1;
    char cur[1024] = "";
    ml_tensor_set s = {0};
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        char file[1024], name[1024], dtype[32];
        int ndim, pos;
        size_t count;
        if (sscanf(line, "count %1023s %zu", file, &count) == 2) {
            if (strcmp(file, cur) != 0) {
                ml_error err = {{0}};
                char path[2200];
                ml_tensor_set_free(&s);
                snprintf(path, sizeof path, "%s/%s", dir, file);
                CHECK_MSG(ml_checkpoint_load_pkl(path, &s, &err) == 0, "%s", err.msg);
                snprintf(cur, sizeof cur, "%s", file);
            }
            CHECK_MSG(s.count == count, "%s: %zu tensors, expected %zu", file, s.count, count);
            continue;
        }
        if (sscanf(line, "%1023s %1023s %31s %d%n", file, name, dtype, &ndim, &pos) != 4) continue;
        lines++;
        const ml_tensor *t = ml_tensor_set_find(&s, name);
        CHECK_MSG(t != NULL, "%s: missing %s", file, name);
        if (!t) continue;
        CHECK_MSG(strcmp(ml_dtype_name(t->dtype), dtype) == 0 && t->ndim == ndim, "%s: %s is %s/%d",
                  file, name, ml_dtype_name(t->dtype), t->ndim);
        const char *p = line + pos;
        for (int i = 0; i < ndim && i < ML_MAX_DIMS; i++) {
            long long d = strtoll(p, (char **)&p, 10);
            CHECK_MSG(t->shape[i] == d, "%s: %s dim %d", file, name, i);
        }
        double want = strtod(p, NULL), sum = 0;
        for (int64_t k = 0; k < ml_tensor_numel(t); k++) sum += ml_tensor_get_f32(t, k);
        CHECK_MSG(fabs(sum - want) <= 1e-6 * (1 + fabs(want)), "%s: %s sum %.9g, expected %.9g",
                  file, name, sum, want);
    }
    fclose(f);
    ml_tensor_set_free(&s);
    CHECK_MSG(lines > 0, "empty manifest");
    printf("checked %d tensors from %s\n", lines, dir);
    return 0;
}

int main(int argc, char **argv) {
    const char *root = getenv("ML_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_checkpoint.XXXXXX", root ? root : "/tmp");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "mkdtemp %s: %s\n", tmpdir, strerror(errno));
        return 2;
    }
    test_dtypes();
    test_pickle_valid();
    test_pickle_hostile();
    test_msgpack_valid();
    test_msgpack_hostile();
    test_pkl_file();
    test_native();
    if (argc == 3 && strcmp(argv[1], "--pkl-dir") == 0) check_pkl_dir(argv[2]);
    for (int p = 2; p <= 5; p++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/p%d.pkl", tmpdir, p);
        unlink(path);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/bad.pkl", tmpdir);
    unlink(path);
    rmdir(tmpdir);
    return check_done("test_checkpoint");
}
