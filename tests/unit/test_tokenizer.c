/* test_tokenizer.c - the CLIP tokenizer against ids from the official Python
 * code (tests/data/tokenizer/expected.jsonl.gz, see
 * tests/reference/gen_tokenizer_ids.py), plus error paths and threads.
 * Run from the repository root; the vocabulary is $MAGICLENS_VOCAB. */
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <zlib.h>

#include "check.h"
#include "io/text_clean.h"
#include "io/tokenizer.h"

#define CTX 77
#define MAX_CASES 20000

/* Hard cases that are known not to match, with the reason (keep short). */
static const struct { const char *text, *why; } known_mismatch[] = {
    /* ftfy's restore_byte_a0 (a space that was byte A0 of mojibake) */
    {"\xc3\x83 la mode", "mojibake with a lost U+00A0 byte: restore_byte_a0 not implemented"},
};

typedef struct tcase {
    char *set, *text;
    int32_t ids[CTX]; /* expected sequence, zero padded */
    int n;            /* expected non-padding count */
    int too_long;     /* n_tokens when over the context, else 0 */
} tcase;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int parse_case(json_t *j, tcase *c) {
    json_t *ids = json_object_get(j, "ids");
    const char *set = json_string_value(json_object_get(j, "set"));
    const char *text = json_string_value(json_object_get(j, "text"));
    if (!set || !text || !json_is_array(ids) || json_array_size(ids) > CTX - 2) return -1;
    memset(c, 0, sizeof *c);
    c->set = strdup(set);
    c->text = strdup(text);
    c->ids[0] = ML_TOKEN_SOT;
    for (size_t i = 0; i < json_array_size(ids); i++)
        c->ids[i + 1] = (int32_t)json_integer_value(json_array_get(ids, i));
    c->n = (int)json_array_size(ids) + 2;
    c->ids[c->n - 1] = ML_TOKEN_EOT;
    c->too_long = (int)json_integer_value(json_object_get(j, "n_tokens"));
    return 0;
}

/* The recorded cases, gzip-compressed JSON lines (each under 4 KB). */
static int load_cases(const char *path, tcase *cases) {
    gzFile f = gzopen(path, "rb");
    if (!f) return -1;
    static char line[1 << 16];
    int n = 0;
    while (gzgets(f, line, sizeof line) && n < MAX_CASES) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (j && !json_object_get(j, "meta") && parse_case(j, &cases[n]) == 0) n++;
        json_decref(j);
    }
    gzclose(f);
    return n;
}

static const char *known_reason(const char *text) {
    for (size_t k = 0; k < sizeof known_mismatch / sizeof known_mismatch[0]; k++)
        if (!strcmp(known_mismatch[k].text, text)) return known_mismatch[k].why;
    return NULL;
}

/* Encodes one case the way it was recorded; 1 if it agrees. */
static int run_case(const ml_tokenizer *t, const tcase *c, int verbose) {
    int32_t ids[CTX];
    ml_error err = {{0}};
    int n = ml_tokenizer_encode(t, c->text, CTX, 0, ids, &err);
    if (c->too_long) {
        char want[64];
        snprintf(want, sizeof want, "is %d tokens, over the context of 77", c->too_long);
        if (n != -1 || !strstr(err.msg, want)) {
            if (verbose) fprintf(stderr, "  too-long case: rc %d, msg '%s'\n", n, err.msg);
            return 0;
        }
        n = ml_tokenizer_encode(t, c->text, CTX, 1, ids, &err);
    }
    int ok = n == c->n && !memcmp(ids, c->ids, sizeof ids);
    if (!ok && verbose) {
        fprintf(stderr, "  got n=%d:", n);
        for (int i = 0; i < CTX && i < (n > 0 ? n : 0) + 1; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n  want n=%d:", c->n);
        for (int i = 0; i < c->n + 1 && i < CTX; i++) fprintf(stderr, " %d", c->ids[i]);
        fprintf(stderr, "\n");
    }
    return ok;
}

static void test_agreement(const ml_tokenizer *t, tcase *cases, int n) {
    int bench = 0, bench_ok = 0, hard = 0, hard_ok = 0, known = 0;
    for (int i = 0; i < n; i++) {
        int is_hard = !strcmp(cases[i].set, "hard");
        int ok = run_case(t, &cases[i], 0);
        *(is_hard ? &hard : &bench) += 1;
        if (ok) {
            *(is_hard ? &hard_ok : &bench_ok) += 1;
            continue;
        }
        const char *why = is_hard ? known_reason(cases[i].text) : NULL;
        fprintf(stderr, "%s [%s] %s: '%s'\n", why ? "known mismatch" : "MISMATCH", cases[i].set,
                why ? why : "", cases[i].text);
        run_case(t, &cases[i], 1);
        if (why) known++;
        else CHECK_MSG(0, "[%s] '%s' differs from the official tokenizer", cases[i].set,
                       cases[i].text);
    }
    printf("benchmark captions: %d / %d match; hard cases: %d / %d match (%d known gaps)\n",
           bench_ok, bench, hard_ok, hard, known);
    CHECK(bench > 15000);
    CHECK(bench_ok == bench);
}

typedef struct thread_arg {
    const ml_tokenizer *t;
    const tcase *cases;
    int n, ok;
} thread_arg;

static void *thread_main(void *p) {
    thread_arg *a = p;
    for (int rep = 0; rep < 2; rep++)
        for (int i = 0; i < a->n; i++) a->ok += run_case(a->t, &a->cases[i], 0);
    return NULL;
}

/* The same texts from two threads on one tokenizer give the same ids. */
static void test_threads(const ml_tokenizer *t, const tcase *cases, int n) {
    int m = n < 3000 ? n : 3000, single = 0;
    for (int i = 0; i < m; i++) single += run_case(t, &cases[i], 0);
    thread_arg a[2] = {{t, cases, m, 0}, {t, cases, m, 0}};
    pthread_t th[2];
    for (int k = 0; k < 2; k++) CHECK(pthread_create(&th[k], NULL, thread_main, &a[k]) == 0);
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    CHECK(a[0].ok == 2 * single && a[1].ok == 2 * single);
}

static void test_truncation(const ml_tokenizer *t) {
    char text[2000] = "";
    for (int i = 0; i < 100; i++) strcat(text, "dog ");
    int32_t ids[CTX];
    ml_error err = {{0}};
    CHECK(ml_tokenizer_encode(t, text, CTX, 0, ids, &err) == -1);
    CHECK_MSG(strstr(err.msg, "is 102 tokens, over the context of 77; use --truncate") != NULL,
              "%s", err.msg);
    CHECK(ml_tokenizer_encode(t, text, CTX, 1, ids, &err) == CTX);
    CHECK(ids[0] == ML_TOKEN_SOT && ids[76] == ML_TOKEN_EOT && ids[75] == ids[1]);
    /* 75 tokens fit exactly */
    text[75 * 4] = '\0';
    CHECK(ml_tokenizer_encode(t, text, CTX, 0, ids, &err) == CTX);
    CHECK(ids[76] == ML_TOKEN_EOT);
    CHECK(ml_tokenizer_encode(t, "a b c", 4, 1, ids, &err) == 4);
    CHECK(ids[0] == ML_TOKEN_SOT && ids[3] == ML_TOKEN_EOT);
    CHECK(ml_tokenizer_encode(t, "a", 1, 1, ids, &err) == -1);
    CHECK(ml_tokenizer_encode(t, "", CTX, 0, ids, &err) == 2);
    CHECK(ids[0] == ML_TOKEN_SOT && ids[1] == ML_TOKEN_EOT && ids[2] == 0);
}

static void test_invalid_utf8(const ml_tokenizer *t) {
    int32_t ids[CTX];
    ml_error err = {{0}};
    static const char *bad[] = {"caf\xe9", "\xff", "a\xc3", "\xed\xa0\x80", "\xc0\xaf"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        CHECK(ml_tokenizer_encode(t, bad[k], CTX, 1, ids, &err) == -1);
        CHECK_MSG(strstr(err.msg, "not valid UTF-8") != NULL, "%s", err.msg);
    }
    char *s = ml_text_clean("  Caf\xc3\xa9 &amp;amp;  \xef\xac\x81sh\t", 26, &err);
    CHECK(s && !strcmp(s, "caf\xc3\xa9 & fish"));
    free(s);
}

/* gzip-compresses `text` into buf; returns the size. */
static size_t gzip_text(const char *text, uint8_t *buf, size_t cap) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
    zs.next_in = (Bytef *)text;
    zs.avail_in = (uInt)strlen(text);
    zs.next_out = buf;
    zs.avail_out = (uInt)cap;
    deflate(&zs, Z_FINISH);
    size_t n = zs.total_out;
    deflateEnd(&zs);
    return n;
}

static void test_bad_vocab(const char *vocab_path) {
    ml_error err = {{0}};
    CHECK(ml_tokenizer_load("/nonexistent/bpe_simple_vocab_16e6.txt.gz", &err) == NULL);
    CHECK_MSG(strstr(err.msg, "not found") && strstr(err.msg, "openai/CLIP"), "%s", err.msg);
    static const uint8_t junk[64] = "this is not gzip at all";
    CHECK(ml_tokenizer_from_gz(junk, sizeof junk, &err) == NULL);
    CHECK_MSG(strstr(err.msg, "corrupt") && strstr(err.msg, "gzip"), "%s", err.msg);
    uint8_t gz[256];
    size_t n = gzip_text("#version: 0.2\ni n\nt h\n", gz, sizeof gz);
    CHECK(ml_tokenizer_from_gz(gz, n, &err) == NULL);
    CHECK_MSG(strstr(err.msg, "has 4 lines, expected at least 48895"), "%s", err.msg);
    FILE *f = fopen(vocab_path, "rb");
    if (!f) return;
    static uint8_t data[2 << 20];
    size_t len = fread(data, 1, sizeof data, f);
    fclose(f);
    CHECK(ml_tokenizer_from_gz(data, len / 2, &err) == NULL); /* truncated download */
    CHECK_MSG(strstr(err.msg, "corrupt"), "%s", err.msg);
}

int main(void) {
    char vb[4096]; /* the lookup every command uses: $MAGICLENS_VOCAB, models/, ../shared */
    const char *vocab = ml_vocab_find(NULL, vb, sizeof vb) == 0 ? vb : "models/bpe_simple_vocab_16e6.txt.gz";
    ml_error err = {{0}};
    double t0 = now_ms();
    ml_tokenizer *t = ml_tokenizer_load(vocab, &err);
    printf("vocab load: %.1f ms\n", now_ms() - t0);
    CHECK_MSG(t != NULL, "%s", err.msg);
    if (!t) return check_done("test_tokenizer");
    tcase *cases = calloc(MAX_CASES, sizeof *cases);
    int n = load_cases("tests/data/tokenizer/expected.jsonl.gz", cases);
    CHECK_MSG(n > 0, "cannot read tests/data/tokenizer/expected.jsonl.gz (run from the repo root)");
    t0 = now_ms();
    test_agreement(t, cases, n);
    printf("encode: %.3f ms per text\n", (now_ms() - t0) / (n > 0 ? n : 1));
    test_threads(t, cases, n);
    test_truncation(t);
    test_invalid_utf8(t);
    test_bad_vocab(vocab);
    for (int i = 0; i < n; i++) {
        free(cases[i].set);
        free(cases[i].text);
    }
    free(cases);
    ml_tokenizer_free(t);
    return check_done("test_tokenizer");
}
