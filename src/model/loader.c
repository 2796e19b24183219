#include "model/loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/mem.h"

typedef struct slot {
    int state; /* 0 free, 1 being filled, 2 ready, 3 held by the consumer */
    int first, count;
    float *pix;
    const float **pixels;
    char **errors;
} slot;

struct ml_loader {
    const ml_model *m;
    ml_load_fn load;
    void *load_ctx;
    int n, batch, next_out, stop;
    size_t px;
    slot slots[2];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void fill_slot(ml_loader *l, slot *s) {
    for (int i = 0; i < s->count; i++) {
        free(s->errors[i]);
        s->errors[i] = NULL;
        s->pixels[i] = NULL;
        ml_image img;
        ml_error e;
        float *dst = s->pix + (size_t)i * l->px;
        int got = l->load(l->load_ctx, s->first + i, &img, &e);
        if (got > 0) continue; /* skipped on purpose */
        if (got == 0) {
            int rc = ml_model_preprocess(l->m, &img, dst, &e);
            ml_image_free(&img);
            if (rc == 0) {
                s->pixels[i] = dst;
                continue;
            }
        }
        s->errors[i] = strdup(e.msg);
    }
}

static void *producer(void *arg) {
    ml_loader *l = arg;
    for (int b = 0, first = 0; first < l->n; b++, first += l->batch) {
        slot *s = &l->slots[b % 2];
        pthread_mutex_lock(&l->mu);
        while (s->state != 0 && !l->stop) pthread_cond_wait(&l->cv, &l->mu);
        int stop = l->stop;
        if (!stop) s->state = 1;
        pthread_mutex_unlock(&l->mu);
        if (stop) break;
        s->first = first;
        s->count = l->n - first < l->batch ? l->n - first : l->batch;
        fill_slot(l, s);
        pthread_mutex_lock(&l->mu);
        s->state = 2;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
    return NULL;
}

/* The default source: files named by a path list (NULL entries skipped). */
static int load_path(void *ctx, int i, ml_image *img, ml_error *err) {
    const char *const *paths = ctx;
    if (!paths[i]) return 1;
    return ml_image_load(paths[i], 0, img, err) == 0 ? 0 : -1;
}

ml_loader *ml_loader_start(const ml_model *m, int n, const char *const *paths, int batch,
                           ml_error *err) {
    return ml_loader_start_fn(m, n, load_path, (void *)paths, batch, err);
}

ml_loader *ml_loader_start_fn(const ml_model *m, int n, ml_load_fn load, void *ctx, int batch,
                              ml_error *err) {
    ml_loader *l = ml_calloc(1, sizeof *l, err);
    if (!l) return NULL;
    int S = ml_model_config(m)->image_size;
    l->m = m, l->load = load, l->load_ctx = ctx, l->n = n, l->batch = batch;
    l->px = (size_t)S * S * 3;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    for (int i = 0; i < 2; i++) {
        slot *s = &l->slots[i];
        s->pix = ml_aligned_alloc((size_t)batch * l->px * sizeof(float), err);
        s->pixels = ml_calloc((size_t)batch, sizeof *s->pixels, err);
        s->errors = ml_calloc((size_t)batch, sizeof *s->errors, err);
        if (!s->pix || !s->pixels || !s->errors) goto fail;
    }
    if (pthread_create(&l->thread, NULL, producer, l) != 0) {
        ml_fail(err, "cannot start the image loader thread");
        goto fail;
    }
    return l;
fail:
    l->stop = 1;
    l->thread = 0;
    for (int i = 0; i < 2; i++) free(l->slots[i].pix), free(l->slots[i].pixels), free(l->slots[i].errors);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
    return NULL;
}

int ml_loader_next(ml_loader *l, ml_loader_batch *out) {
    if ((long long)l->next_out * l->batch >= l->n) return 1;
    int si = l->next_out % 2;
    slot *s = &l->slots[si];
    pthread_mutex_lock(&l->mu);
    while (s->state != 2) pthread_cond_wait(&l->cv, &l->mu);
    s->state = 3;
    pthread_mutex_unlock(&l->mu);
    l->next_out++;
    *out = (ml_loader_batch){s->first, s->count, s->pixels, s->errors, si};
    return 0;
}

void ml_loader_release(ml_loader *l, ml_loader_batch *b) {
    pthread_mutex_lock(&l->mu);
    l->slots[b->slot].state = 0;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void ml_loader_free(ml_loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    for (int i = 0; i < 2; i++) {
        slot *s = &l->slots[i];
        for (int k = 0; k < l->batch; k++) free(s->errors[k]);
        free(s->pix), free(s->pixels), free(s->errors);
    }
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}
