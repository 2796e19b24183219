/* ckpt.c - training checkpoints (see ckpt.h). */
#include "train/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/error.h"
#include "core/fileio.h"
#include "io/native.h"

#define STATE_MAGIC "MLTRAIN\n"
#define STATE_VERSION 1u

/* The fixed header of a .state file; m and v (n floats each) follow, then
 * the XXH3-64 of everything before it. */
typedef struct state_header {
    char magic[8];
    uint32_t version, header_size;
    int64_t step, epoch, index, adam_t;
    uint64_t n, weights_hash, settings_hash;
} state_header;

uint64_t ml_ckpt_weights_hash(const ml_tmodel *tm) {
    return XXH3_64bits(tm->w, tm->total * sizeof(float));
}

static char *path_of(const char *dir, const char *name, const char *ext) {
    size_t n = strlen(dir) + strlen(name) + strlen(ext) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s%s", dir, name, ext);
    return p;
}

static int write_all(int fd, const void *data, size_t len, XXH3_state_t *h) {
    const uint8_t *p = data;
    if (h) XXH3_64bits_update(h, data, len);
    while (len > 0) {
        ssize_t w = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w, len -= (size_t)w;
    }
    return 0;
}

static int save_state(const char *dir, const char *path, const ml_tmodel *tm, const ml_adamw *opt,
                      const ml_ckpt_pos *pos, uint64_t settings_hash, ml_error *err) {
    state_header hd;
    memset(&hd, 0, sizeof hd);
    memcpy(hd.magic, STATE_MAGIC, 8);
    hd.version = STATE_VERSION, hd.header_size = sizeof hd;
    hd.step = pos->step, hd.epoch = pos->epoch, hd.index = pos->index, hd.adam_t = opt->t;
    hd.n = opt->n, hd.weights_hash = ml_ckpt_weights_hash(tm), hd.settings_hash = settings_hash;
    size_t tn = strlen(path) + 5;
    char *tmp = malloc(tn);
    if (!tmp) return ml_fail(err, "out of memory");
    snprintf(tmp, tn, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = -1;
    if (fd < 0) {
        ml_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    XXH3_state_t *h = XXH3_createState();
    if (h && XXH3_64bits_reset(h) == XXH_OK && write_all(fd, &hd, sizeof hd, h) == 0 &&
        write_all(fd, opt->m, opt->n * sizeof(float), h) == 0 &&
        write_all(fd, opt->v, opt->n * sizeof(float), h) == 0) {
        uint64_t sum = XXH3_64bits_digest(h);
        if (write_all(fd, &sum, sizeof sum, NULL) == 0 && fsync(fd) == 0) rc = 0;
    }
    if (rc != 0) ml_fail(err, "%s: write failed: %s", tmp, strerror(errno));
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = ml_fail(err, "%s: rename: %s", path, strerror(errno));
    if (rc == 0) rc = ml_fsync_dir(dir, err);
    if (rc != 0) unlink(tmp);
    XXH3_freeState(h);
    free(tmp);
    return rc;
}

int ml_ckpt_save(const char *dir, const char *name, const ml_tmodel *tm, const ml_adamw *opt,
                 const ml_ckpt_pos *pos, const ml_ckpt_meta *meta, ml_error *err) {
    char *mpath = path_of(dir, name, ".mlens"), *spath = path_of(dir, name, ".state");
    ml_tensor_set ts = {0};
    int rc = mpath && spath ? 0 : ml_fail(err, "out of memory");
    if (rc == 0) rc = ml_tmodel_to_tensors(tm, &ts, err);
    /* The model first: a state file is only ever beside its model. */
    if (rc == 0)
        rc = ml_native_write(mpath, &ts, meta->config_json, meta->vocab_gz, meta->vocab_len, err);
    if (rc == 0 && opt) rc = save_state(dir, spath, tm, opt, pos, meta->settings_hash, err);
    ml_tensor_set_free(&ts);
    free(mpath), free(spath);
    return rc;
}

/* N of "step_N.state", or -1. */
static int64_t step_of(const char *name, const char *ext) {
    long long n;
    int used = 0;
    if (sscanf(name, "step_%lld%n", &n, &used) != 1 || n < 0) return -1;
    return strcmp(name + used, ext) == 0 ? (int64_t)n : -1;
}

int64_t ml_ckpt_latest(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int64_t best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s = step_of(e->d_name, ".state");
        if (s > best) best = s;
    }
    closedir(d);
    return best;
}

static int read_exact(FILE *f, void *buf, size_t len, XXH3_state_t *h) {
    if (fread(buf, 1, len, f) != len) return -1;
    if (h) XXH3_64bits_update(h, buf, len);
    return 0;
}

static int load_state(const char *path, ml_adamw *opt, ml_ckpt_pos *pos, uint64_t *weights_hash,
                      uint64_t settings_hash, ml_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ml_fail(err, "%s: cannot open: %s", path, strerror(errno));
    state_header hd;
    XXH3_state_t *h = XXH3_createState();
    int rc = -1;
    uint64_t sum = 0;
    if (!h || XXH3_64bits_reset(h) != XXH_OK || read_exact(f, &hd, sizeof hd, h) != 0)
        ml_fail(err, "%s: truncated header", path);
    else if (memcmp(hd.magic, STATE_MAGIC, 8) != 0 || hd.header_size != sizeof hd)
        ml_fail(err, "%s: not a magiclens training state", path);
    else if (hd.version != STATE_VERSION)
        ml_fail(err, "%s: state version %u, this build reads %u", path, hd.version, STATE_VERSION);
    else if (hd.n != opt->n)
        ml_fail(err, "%s: holds %llu parameters, the model has %zu", path, (unsigned long long)hd.n,
                opt->n);
    else if (hd.settings_hash != settings_hash)
        ml_fail(err,
                "%s: saved by a run with other settings (data, batch, seed, "
                "training mode, "
                "temperature or init); start a new output folder or use the same "
                "settings",
                path);
    else if (read_exact(f, opt->m, opt->n * sizeof(float), h) != 0 ||
             read_exact(f, opt->v, opt->n * sizeof(float), h) != 0 ||
             read_exact(f, &sum, sizeof sum, NULL) != 0)
        ml_fail(err, "%s: truncated", path);
    else if (sum != XXH3_64bits_digest(h) || fgetc(f) != EOF)
        ml_fail(err, "%s: checksum mismatch (damaged file)", path);
    else {
        opt->t = hd.adam_t;
        pos->step = hd.step, pos->epoch = hd.epoch, pos->index = hd.index;
        *weights_hash = hd.weights_hash;
        rc = 0;
    }
    XXH3_freeState(h);
    fclose(f);
    return rc;
}

static int load_weights(const char *path, ml_tmodel *tm, ml_error *err) {
    ml_tensor_set ts = {0};
    if (ml_native_load(path, &ts, err) != 0) return -1;
    int rc = 0;
    for (int i = 0; i < tm->n_params && rc == 0; i++) {
        const ml_tparam *p = &tm->params[i];
        const ml_tensor *t = ml_tensor_set_find(&ts, p->name);
        if (!t || t->dtype != ML_F32 || (size_t)ml_tensor_numel(t) != p->count)
            rc = ml_fail(err, "%s: tensor '%s' is missing or has another size", path, p->name);
        else
            memcpy(tm->w + p->offset, t->data, p->count * sizeof(float));
    }
    ml_tensor_set_free(&ts);
    return rc;
}

int ml_ckpt_load(const char *dir, int64_t step, ml_tmodel *tm, ml_adamw *opt, ml_ckpt_pos *pos,
                 uint64_t settings_hash, ml_error *err) {
    char name[64];
    snprintf(name, sizeof name, "step_%lld", (long long)step);
    char *mpath = path_of(dir, name, ".mlens"), *spath = path_of(dir, name, ".state");
    uint64_t wh = 0;
    int rc = mpath && spath ? 0 : ml_fail(err, "out of memory");
    if (rc == 0) rc = load_state(spath, opt, pos, &wh, settings_hash, err);
    if (rc == 0) rc = load_weights(mpath, tm, err);
    if (rc == 0 && ml_ckpt_weights_hash(tm) != wh)
        rc = ml_fail(err, "%s does not hold the weights %s was saved with", mpath, spath);
    free(mpath), free(spath);
    return rc;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void ml_ckpt_prune(const char *dir, int keep) {
    if (keep <= 0) return;
    DIR *d = opendir(dir);
    if (!d) return;
    int64_t *steps = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s = step_of(e->d_name, ".state");
        if (s < 0) continue;
        if (n == cap) {
            int64_t *p = realloc(steps, (cap = cap ? 2 * cap : 16) * sizeof *p);
            if (!p) break;
            steps = p;
        }
        steps[n++] = s;
    }
    closedir(d);
    if (steps) qsort(steps, n, sizeof *steps, cmp_i64);
    for (size_t i = 0; i + (size_t)keep < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "step_%lld", (long long)steps[i]);
        /* The state goes first: a model without a state is never resumed from. */
        char *s = path_of(dir, name, ".state"), *m = path_of(dir, name, ".mlens");
        if (s) unlink(s);
        if (m) unlink(m);
        free(s), free(m);
    }
    free(steps);
}
