/* export.c - an index's embeddings as clip-retrieval ships them:
 * embeddings.npy (MagicLens gallery), clip_embeddings.npy (CLIP image,
 * L2-normalised) and metadata.jsonl (id, path, size, mtime, content hash),
 * rows in id order. */
#include "index/export.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "io/npy.h"
#include "kernels/ops.h"

static char *out_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int write_metadata(const char *path, const ml_item *items, size_t n) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    for (size_t i = 0; i < n; i++) {
        char hash[33];
        for (int b = 0; b < 16; b++) sprintf(hash + 2 * b, "%02x", items[i].hash[b]);
        json_t *j = json_pack("{s:I, s:s, s:I, s:I, s:s}", "id", (json_int_t)items[i].id, "path",
                              items[i].path, "size", (json_int_t)items[i].size, "mtime_ns",
                              (json_int_t)items[i].mtime_ns, "hash", hash);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (s) fprintf(f, "%s\n", s);
        free(s);
        json_decref(j);
    }
    return fclose(f) == 0 ? 0 : -1;
}

int ml_index_export_store(const ml_store *st, const char *dir, ml_error *err) {
    size_t n = ml_store_count(st);
    int D = ml_store_get_meta(st)->dim, rc = 0;
    const ml_item *items = ml_store_items(st);
    float *emb = malloc(sizeof(float) * (n ? n : 1) * D), *clip = malloc(sizeof(float) * (n ? n : 1) * D);
    char *pe = out_path(dir, "embeddings.npy"), *pc = out_path(dir, "clip_embeddings.npy");
    char *pm = out_path(dir, "metadata.jsonl");
    if (!emb || !clip || !pe || !pc || !pm || (mkdir(dir, 0755) != 0 && errno != EEXIST))
        rc = ml_fail(err, "cannot create %s: %s", dir, strerror(errno));
    for (size_t i = 0; rc == 0 && i < n; i++) {
        memcpy(emb + i * D, items[i].emb, sizeof(float) * D);
        memcpy(clip + i * D, items[i].clip, sizeof(float) * D);
        ml_l2_normalize(clip + i * D, D); /* as clip-retrieval ships them */
    }
    if (rc == 0 && (ml_npy_write_f32(pe, emb, (int64_t)n, D, err) != 0 ||
                    ml_npy_write_f32(pc, clip, (int64_t)n, D, err) != 0))
        rc = -1;
    if (rc == 0 && write_metadata(pm, items, n) != 0) rc = ml_fail(err, "cannot write %s", pm);
    free(emb), free(clip), free(pe), free(pc), free(pm);
    return rc;
}
