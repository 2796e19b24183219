/* test_image.c - image decoding and preprocessing against PIL / numpy.
 *
 * usage: test_image [FIXTURE_DIR]   (default $ML_TMP/images)
 * The fixtures come from tests/reference/make_images.py; when FIXTURE_DIR
 * has no good.txt the script is run first ($ML_ROOT or the current
 * directory must be the repository root).  Checks: exact RGB bytes against
 * PIL's convert("RGB") for every good image, preprocessing at 224 and 64
 * within 1e-5 of the float64 reference, every broken file refused with a
 * message naming it, and concurrent decodes giving identical pixels. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "check.h"
#include "io/npy.h"
#include "kernels/cpu.h"
#include "magiclens.h"
#include "model/preprocess.h"

#define MAX_FILES 128
/* The resampling sums in float32 against the float64 reference: about
 * 1e-6 at worst on these fixtures (was 1.2e-7, the output's own rounding,
 * when it ran in double). */
#define PRE_TOL 1e-5

typedef struct name_list {
    int n;
    char names[MAX_FILES][128];
} name_list;

/* dir/name+suffix into buf (PATH_LEN bytes); exits on an over-long path. */
#define PATH_LEN 1400
static char *fixture_path(char *buf, const char *dir, const char *name, const char *suffix) {
    if (snprintf(buf, PATH_LEN, "%s/%s%s", dir, name, suffix) >= PATH_LEN) {
        fprintf(stderr, "path too long: %s/%s\n", dir, name);
        exit(2);
    }
    return buf;
}

static int read_list(const char *dir, const char *file, name_list *l) {
    char path[PATH_LEN];
    fixture_path(path, dir, file, "");
    FILE *f = fopen(path, "r");
    l->n = 0;
    if (!f) return -1;
    char line[sizeof l->names[0]];
    while (l->n < MAX_FILES && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (line[0]) memcpy(l->names[l->n++], line, sizeof line);
    }
    fclose(f);
    return 0;
}

static int ensure_fixtures(const char *dir) {
    char path[PATH_LEN];
    fixture_path(path, dir, "good.txt", "");
    FILE *f = fopen(path, "r");
    if (f) {
        fclose(f);
        return 0;
    }
    const char *root = getenv("ML_ROOT");
    char cmd[4096];
    if (snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/reference/make_images.py '%s'",
             root ? root : ".", dir) >= (int)sizeof cmd)
        return -1;
    printf("generating fixtures: %s\n", cmd);
    return system(cmd) == 0 ? 0 : -1;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Exact comparison with PIL's pixels; returns 1 when identical. */
static int compare_rgb(const char *dir, const char *name, const ml_image *img) {
    char path[PATH_LEN];
    fixture_path(path, dir, name, ".rgb.npy");
    char dt;
    int isz, nd;
    int64_t shape[ML_NPY_MAX_DIMS];
    void *ref = NULL;
    ml_error err = {{0}};
    if (ml_npy_read(path, &dt, &isz, shape, &nd, &ref, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return 0;
    }
    int ok = dt == 'u' && isz == 1 && nd == 3 && shape[0] == img->height &&
             shape[1] == img->width && shape[2] == 3;
    CHECK_MSG(ok, "%s: shape %dx%d, PIL %lldx%lld", name, img->width, img->height,
              (long long)shape[1], (long long)shape[0]);
    if (ok) {
        size_t n = (size_t)img->width * img->height * 3, bad = 0;
        int maxd = 0;
        for (size_t k = 0; k < n; k++) {
            int d = abs((int)img->rgb[k] - (int)((uint8_t *)ref)[k]);
            bad += d != 0;
            if (d > maxd) maxd = d;
        }
        ok = bad == 0;
        CHECK_MSG(ok, "%s: %zu of %zu bytes differ from PIL (max diff %d)", name, bad, n, maxd);
    }
    free(ref);
    return ok;
}

/* Max |ours - reference| of the preprocessed image, or -1 on error. */
static double compare_pre(const char *dir, const char *name, const ml_image *img, int size,
                          double *ms) {
    char path[PATH_LEN];
    fixture_path(path, dir, name, size == 224 ? ".pre.npy" : ".pre64.npy");
    char dt;
    int isz, nd;
    int64_t shape[ML_NPY_MAX_DIMS];
    void *ref = NULL;
    ml_error err = {{0}};
    if (ml_npy_read(path, &dt, &isz, shape, &nd, &ref, &err) != 0) {
        CHECK_MSG(0, "%s", err.msg);
        return -1;
    }
    double worst = -1;
    float *out = malloc(sizeof(float) * (size_t)size * size * 3);
    double t0 = now_ms();
    int rc = ml_preprocess_image(img, size, out, &err);
    *ms = now_ms() - t0;
    CHECK_MSG(rc == 0, "%s: preprocess %d: %s", name, size, err.msg);
    if (rc == 0 && dt == 'f' && isz == 8 && nd == 3 && shape[0] == size && shape[1] == size) {
        worst = 0;
        for (size_t k = 0; k < (size_t)size * size * 3; k++) {
            double d = fabs(out[k] - ((double *)ref)[k]);
            if (d > worst) worst = d;
        }
    }
    CHECK_MSG(worst >= 0 && worst <= PRE_TOL, "%s: preprocess %d max diff %g", name, size, worst);
    free(out);
    free(ref);
    return worst;
}

static void test_good(const char *dir, const name_list *good) {
    double worst = 0;
    int exact = 0;
    for (int i = 0; i < good->n; i++) {
        const char *name = good->names[i];
        char path[PATH_LEN];
        fixture_path(path, dir, name, "");
        ml_image img;
        ml_error err = {{0}};
        double t0 = now_ms();
        int rc = ml_image_load(path, 0, &img, &err);
        double dec_ms = now_ms() - t0;
        CHECK_MSG(rc == 0, "%s", err.msg);
        if (rc != 0) continue;
        int same = compare_rgb(dir, name, &img);
        exact += same;
        /* Every resampling path this machine runs; the default one last
         * (its figures are printed). */
        ml_isa active = ml_isa_active();
        double ms224 = 0, ms64 = 0, d224 = 0, d64 = 0;
        for (int isa = ML_ISA_SCALAR; isa <= ML_ISA_AVX512 + 1; isa++) {
            ml_isa use = isa <= ML_ISA_AVX512 ? (ml_isa)isa : active;
            if (!ml_isa_supported(use) || ml_isa_set(use, &err) != 0) continue;
            d224 = compare_pre(dir, name, &img, 224, &ms224);
            d64 = compare_pre(dir, name, &img, 64, &ms64);
            if (d224 > worst) worst = d224;
            if (d64 > worst) worst = d64;
        }
        printf("  %-28s %5dx%-5d rgb %s  pre224 %.2e  pre64 %.2e  (decode %.1f ms, pre %.1f ms)\n",
               name, img.width, img.height, same ? "exact" : "DIFF ", d224, d64, dec_ms, ms224);
        ml_image_free(&img);
    }
    printf("good images: %d of %d pixel-exact with PIL; max preprocessing diff %.3g (every ISA path)\n",
           exact, good->n, worst);
}

static void test_bad(const char *dir, const name_list *bad) {
    for (int i = 0; i < bad->n; i++) {
        char path[PATH_LEN];
        fixture_path(path, dir, bad->names[i], "");
        ml_image img = {1, 1, (uint8_t *)"x"};
        ml_error err = {{0}};
        int rc = ml_image_load(path, 0, &img, &err);
        CHECK_MSG(rc != 0, "%s: broken file accepted", bad->names[i]);
        CHECK_MSG(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
        CHECK(img.rgb == NULL && img.width == 0);
        printf("  refused: %s\n", err.msg);
        if (rc == 0) ml_image_free(&img);
    }
}

/* Limits and argument checks that need no fixture. */
static void test_limits(const char *dir) {
    ml_image img;
    ml_error err = {{0}};
    char path[PATH_LEN];
    fixture_path(path, dir, "no-such-file.png", "");
    CHECK(ml_image_load(path, 0, &img, &err) != 0 && strstr(err.msg, path));
    fixture_path(path, dir, "jpeg_baseline.jpg", ""); /* 300x200 */
    CHECK(ml_image_load(path, 60000, &img, &err) == 0);
    ml_image_free(&img);
    CHECK(ml_image_load(path, 59999, &img, &err) != 0 && strstr(err.msg, "decompression bomb"));
    printf("  limit: %s\n", err.msg);
    CHECK(ml_image_decode(NULL, 0, 0, &img, &err) != 0);
    /* A constant image normalises to exactly 1 everywhere, up to float32
     * rounding: the resampling sums in float32 (7 -> 224 -> 16 is about 60
     * taps over the two axes of the second resize, a few 1e-7 relative),
     * and 1/std = 3.7 scales that to about 1.5e-6 on the output. */
    uint8_t px[5 * 7 * 3];
    memset(px, 9, sizeof px);
    ml_image c = {7, 5, px};
    float out[16 * 16 * 3];
    CHECK(ml_preprocess_image(&c, 16, out, &err) == 0);
    for (int k = 0; k < 16 * 16 * 3; k += 3)
        CHECK(fabsf(out[k] - (float)((1 - 0.48145466) / 0.26862954)) < 4e-6f);
    CHECK(ml_preprocess_image(&c, 0, out, &err) != 0);
}

typedef struct thread_job {
    const char *dir;
    const name_list *good;
    int mismatches;
} thread_job;

static void *decode_all(void *arg) {
    thread_job *j = arg;
    for (int i = 0; i < j->good->n; i++) {
        char path[PATH_LEN];
        fixture_path(path, j->dir, j->good->names[i], "");
        ml_image a, b;
        ml_error err;
        if (ml_image_load(path, 0, &a, &err) != 0) {
            j->mismatches++;
            continue;
        }
        if (ml_image_load(path, 0, &b, &err) != 0 ||
            memcmp(a.rgb, b.rgb, (size_t)a.width * a.height * 3) != 0)
            j->mismatches++;
        ml_image_free(&a);
        ml_image_free(&b);
    }
    return NULL;
}

static void test_threads(const char *dir, const name_list *good) {
    pthread_t t[4];
    thread_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){dir, good, 0};
        pthread_create(&t[i], NULL, decode_all, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK(jobs[i].mismatches == 0);
    }
}

int main(int argc, char **argv) {
    char dir[PATH_LEN];
    const char *tmp = getenv("ML_TMP");
    if (argc > 1 && strlen(argv[1]) < sizeof dir) memcpy(dir, argv[1], strlen(argv[1]) + 1);
    else fixture_path(dir, tmp ? tmp : "/tmp", "images", "");
    if (ensure_fixtures(dir) != 0) {
        fprintf(stderr, "cannot make the fixtures in %s\n", dir);
        return 1;
    }
    name_list good, bad;
    CHECK(read_list(dir, "good.txt", &good) == 0 && good.n > 0);
    CHECK(read_list(dir, "bad.txt", &bad) == 0 && bad.n > 0);
    test_good(dir, &good);
    test_bad(dir, &bad);
    test_limits(dir);
    if (!getenv("ML_SKIP_SLOW")) test_threads(dir, &good);
    return check_done("test_image");
}
