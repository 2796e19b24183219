/* runner.c - see runner.h. */
#include "eval/runner.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/progress.h"
#include "eval/metrics.h"
#include "index/indexer.h"
#include "index/searcher.h"
#include "index/store.h"

#define PATH_BUF 4096

typedef struct id_pos {
    int64_t id;
    int32_t pos;
} id_pos;

/* Everything one task's scoring needs. */
typedef struct task_ctx {
    const ml_eval_task *t;
    ml_searcher *gs;
    const ml_store *gstore;
    ml_store *qstore;
    const ml_item **gitem; /* per gallery position; NULL = not indexed */
    id_pos *byid;          /* sorted by id: index id -> gallery position */
    size_t nbyid;
    int dim, clip_dim, depth;
    long gallery_missing;
} task_ctx;

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* Writes one path per line; returns how many were written, -1 on error. */
static long write_list(const char *file, char *const *paths, const int *keep, long n,
                       ml_error *err) {
    FILE *f = fopen(file, "w");
    if (!f) return ml_fail(err, "%s: %s", file, strerror(errno));
    long w = 0;
    for (long i = 0; i < n; i++)
        if (keep[i] && !strchr(paths[i], '\n')) fprintf(f, "%s\n", paths[i]), w++;
    if (fclose(f) != 0) return ml_fail(err, "%s: write failed", file);
    return w;
}

/* mode: ML_INDEX_SYNC (the index mirrors the list) or ML_INDEX_ADD (tasks
 * that rank only their own candidates share one index without dropping each
 * other's items). */
static int index_list(ml_model *m, const char *list, const char *dir, const ml_eval_opts *o,
                      int mode, ml_error *err) {
    const char *src[] = {list};
    ml_index_opts io = {src, 1, mode, o->batch, o->progress, 0, 20,
                        o->model_name, o->precision, NULL, NULL};
    ml_index_stats st;
    if (ml_index_run(m, dir, &io, &st, err) != 0) return ml_fail_prefix(err, "index %s", dir);
    if (o->progress)
        fprintf(stderr, "eval: %s: %lld images (%lld embedded now, %lld unchanged, %lld failed)\n",
                dir, st.items, st.added + st.updated, st.unchanged + st.touched, st.failed);
    return 0;
}

/* Writes the crop files (GeneCIS attribute tasks) that do not exist yet.
 * A crop whose source image is missing or unusable stays missing: it is
 * then counted with the other missing gallery items. */
static void make_crops(const ml_eval_task *t, const ml_eval_opts *o) {
    if (!t->crops) return;
    long todo = 0, failed = 0;
    for (int i = 0; i < t->ngallery && i < t->ccap; i++)
        if (t->crops[i].src && !exists(t->paths[i])) todo++;
    if (todo == 0) return;
    ml_progress p;
    char label[128], first[1024] = "";
    snprintf(label, sizeof label, "%s crops", t->name);
    ml_progress_start(&p, label, todo, o->progress);
    for (int i = 0; i < t->ngallery && i < t->ccap; i++) {
        const ml_eval_crop *c = &t->crops[i];
        if (!c->src || exists(t->paths[i])) continue;
        ml_error e;
        if (!exists(c->src)) {
            if (!failed++) snprintf(first, sizeof first, "%s: no such file", c->src);
        } else if (ml_eval_make_crop(c->src, c->box, t->paths[i], &e) != 0) {
            if (!failed++) snprintf(first, sizeof first, "%s", e.msg);
        }
        ml_progress_add(&p, 1);
    }
    ml_progress_finish(&p);
    if (failed)
        fprintf(stderr, "eval: %s: %ld of %ld crops could not be made (first: %s)\n", t->name,
                failed, todo, first);
}

/* Indexes the gallery images that exist; missing ones are counted. */
static int build_gallery(ml_model *m, const ml_eval_task *t, const ml_eval_opts *o, char *dir,
                         ml_error *err) {
    char list[PATH_BUF];
    make_crops(t, o);
    snprintf(list, sizeof list, "%s/%s.list", o->output, t->index_name);
    snprintf(dir, PATH_BUF, "%s/%s.mlindex", o->output, t->index_name);
    int *keep = calloc((size_t)t->ngallery + 1, sizeof *keep);
    if (!keep) return ml_fail(err, "out of memory");
    long present = 0, first_missing = -1;
    for (int i = 0; i < t->ngallery; i++) {
        keep[i] = exists(t->paths[i]);
        present += keep[i];
        if (!keep[i] && first_missing < 0) first_missing = i;
    }
    if (present == 0) {
        int rc = ml_fail(err, "%s: none of the %d gallery images exists (e.g. %s)", t->name,
                         t->ngallery, t->ngallery ? t->paths[0] : "-");
        free(keep);
        return rc;
    }
    if (first_missing >= 0)
        fprintf(stderr, "eval: %s: %ld of %d gallery images are missing (first: %s)\n", t->name,
                t->ngallery - present, t->ngallery, t->paths[first_missing]);
    long w = write_list(list, t->paths, keep, t->ngallery, err);
    free(keep);
    return w < 0 ? -1
                 : index_list(m, list, dir, o, t->subset_gallery ? ML_INDEX_ADD : ML_INDEX_SYNC,
                              err);
}

/* Query images that are not gallery images get their own index. */
static int build_queries(ml_model *m, const ml_eval_task *t, const ml_eval_opts *o, char *dir,
                         ml_error *err) {
    char list[PATH_BUF];
    snprintf(list, sizeof list, "%s/%s-%s-queries.list", o->output, t->index_name, t->name);
    snprintf(dir, PATH_BUF, "%s/%s-%s-queries.mlindex", o->output, t->index_name, t->name);
    char **paths = calloc((size_t)t->nq + 1, sizeof *paths);
    int *keep = calloc((size_t)t->nq + 1, sizeof *keep);
    if (!paths || !keep) {
        free(paths), free(keep);
        return ml_fail(err, "out of memory");
    }
    long n = 0;
    for (int i = 0; i < t->nq; i++) {
        const ml_eval_query *q = &t->q[i];
        if (q->ref >= 0 || !q->image || q->problem || !exists(q->image)) continue;
        paths[n] = q->image, keep[n++] = 1;
    }
    long w = n ? write_list(list, paths, keep, n, err) : 0;
    free(paths), free(keep);
    if (w < 0) return -1;
    if (w == 0) {
        dir[0] = 0;
        return 0;
    }
    return index_list(m, list, dir, o, ML_INDEX_SYNC, err);
}

static int cmp_id_pos(const void *a, const void *b) {
    const id_pos *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

static int32_t pos_of_id(const task_ctx *c, int64_t id) {
    id_pos key = {id, 0};
    const id_pos *r = bsearch(&key, c->byid, c->nbyid, sizeof key, cmp_id_pos);
    return r ? r->pos : -1;
}

static int open_task(ml_model *m, const ml_eval_task *t, const ml_eval_opts *o, task_ctx *c,
                     ml_error *err) {
    char gdir[PATH_BUF], qdir[PATH_BUF];
    memset(c, 0, sizeof *c);
    c->t = t;
    if (build_gallery(m, t, o, gdir, err) != 0 || build_queries(m, t, o, qdir, err) != 0) return -1;
    ml_searcher_opts so = {ML_VEC_F32, 0, 0, 0};
    if (!(c->gs = ml_searcher_open(gdir, &so, err))) return -1;
    c->gstore = ml_searcher_store(c->gs);
    if (qdir[0] && !(c->qstore = ml_store_open(qdir, ML_STORE_READ, NULL, err))) return -1;
    c->dim = ml_store_get_meta(c->gstore)->dim;
    c->clip_dim = ml_store_get_meta(c->gstore)->clip_dim;
    c->gitem = calloc((size_t)t->ngallery + 1, sizeof *c->gitem);
    c->byid = calloc((size_t)t->ngallery + 1, sizeof *c->byid);
    if (!c->gitem || !c->byid) return ml_fail(err, "out of memory");
    for (int i = 0; i < t->ngallery; i++) {
        const ml_item *it = ml_store_find_path(c->gstore, t->paths[i]);
        c->gitem[i] = it;
        if (it) c->byid[c->nbyid++] = (id_pos){it->id, i};
        else c->gallery_missing++;
    }
    qsort(c->byid, c->nbyid, sizeof *c->byid, cmp_id_pos);
    c->depth = o->k;
    for (int i = 0; i < t->nmetrics; i++)
        if (t->metrics[i].kind != ML_METRIC_RECALL_SUBSET && t->metrics[i].k > c->depth)
            c->depth = t->metrics[i].k;
    return 0;
}

static void close_task(task_ctx *c) {
    ml_searcher_close(c->gs);
    ml_store_close(c->qstore);
    free(c->gitem), free(c->byid);
}

/* The stored CLIP image embedding of a query's image (NULL: none). */
static const float *query_clip(const task_ctx *c, const ml_eval_query *q) {
    if (q->ref >= 0 && c->gitem[q->ref]) return c->gitem[q->ref]->clip;
    if (q->ref < 0 && q->image && c->qstore) {
        const ml_item *it = ml_store_find_path(c->qstore, q->image);
        if (it) return it->clip;
    }
    return NULL;
}

/* Text to image (CLIP towers): a query with no image at all.  A query whose
 * image is a gallery item is named by `ref` alone. */
static int text_only(const ml_eval_query *q) { return !q->image && q->ref < 0; }

static float dot(const float *a, const float *b, int d) {
    double s = 0;
    for (int i = 0; i < d; i++) s += (double)a[i] * b[i];
    return (float)s;
}

/* Scores of the given gallery positions (the ones that were indexed). */
static int score_positions(const task_ctx *c, const float *qv, const int32_t *pos, int n,
                           float *scores, int32_t *items) {
    int w = 0;
    for (int i = 0; i < n; i++) {
        const ml_item *it = c->gitem[pos[i]];
        if (!it) continue;
        scores[w] = dot(qv, it->emb, c->dim);
        items[w++] = pos[i];
    }
    return w;
}

/* Ranks the query: its own subset (GeneCIS) or the whole index. */
static int rank_query(const task_ctx *c, const ml_eval_query *q, const float *qv, int32_t *ranked,
                      float *rscores, ml_error *err) {
    const ml_eval_task *t = c->t;
    if (t->subset_gallery) {
        float *s = malloc(((size_t)q->nsubset + 1) * sizeof *s);
        int32_t *it = malloc(((size_t)q->nsubset + 1) * sizeof *it);
        if (!s || !it) {
            free(s), free(it);
            return ml_fail(err, "out of memory");
        }
        int n = score_positions(c, qv, q->subset, q->nsubset, s, it);
        int w = ml_rank_topk(s, it, n, -1, c->depth, ranked);
        for (int i = 0; i < w; i++) rscores[i] = dot(qv, c->gitem[ranked[i]]->emb, c->dim);
        free(s), free(it);
        return w;
    }
    ml_result *res = malloc((size_t)c->depth * sizeof *res);
    if (!res) return ml_fail(err, "out of memory");
    ml_query mq = {qv, text_only(q) ? ML_SPACE_CLIP : ML_SPACE_MAGICLENS, c->depth, 0, -INFINITY,
                   NULL, 0, -1};
    if (t->exclude_ref && q->ref >= 0 && c->gitem[q->ref]) mq.exclude_id = c->gitem[q->ref]->id;
    int n = 0;
    if (ml_searcher_search(c->gs, &mq, res, &n, err) != 0) {
        free(res);
        return -1;
    }
    int w = 0;
    for (int i = 0; i < n; i++) {
        int32_t p = pos_of_id(c, res[i].id);
        if (p < 0) continue; /* not part of this task's gallery */
        ranked[w] = p, rscores[w++] = res[i].score;
    }
    free(res);
    return w;
}

/* CIRR's subset ranking: img_set members minus the reference, top 3. */
static int rank_subset(const task_ctx *c, const ml_eval_query *q, const float *qv, int32_t *out,
                       int k) {
    float s[64];
    int32_t it[64], mem[64];
    int n = q->nsubset < 64 ? q->nsubset : 64;
    memcpy(mem, q->subset, (size_t)n * sizeof *mem);
    int w = score_positions(c, qv, mem, n, s, it);
    return ml_rank_topk(s, it, w, q->ref, k, out);
}

typedef struct acc {
    double sum[ML_EVAL_MAX_METRICS];
    long nq, scored;
    long truncated;
    json_t *problems; /* the first few, for the report */
    long nproblems;
} acc;

static void add_problem(acc *a, const ml_eval_query *q, const char *why) {
    a->nproblems++;
    if (json_array_size(a->problems) < 10)
        json_array_append_new(a->problems, json_pack("{s:s, s:s}", "query", q->id, "problem", why));
}

static void score_query(const task_ctx *c, const ml_eval_query *q, const float *qv,
                        const int32_t *ranked, int n, acc *a) {
    const ml_eval_task *t = c->t;
    for (int i = 0; i < t->nmetrics; i++) {
        const ml_metric_spec *ms = &t->metrics[i];
        double v = 0;
        if (ms->kind == ML_METRIC_RECALL)
            v = ml_recall_at_k(ranked, n, q->targets, q->ntargets, ms->k);
        else if (ms->kind == ML_METRIC_MAP)
            v = ml_ap_at_k(ranked, n, q->targets, q->ntargets, ms->k);
        else if (q->ntargets > 0) {
            float s[64];
            int32_t it[64];
            int m = score_positions(c, qv, q->subset, q->nsubset < 64 ? q->nsubset : 64, s, it);
            v = ml_recall_subset_at_k(s, it, m, q->ref, q->targets[0], ms->k);
        }
        a->sum[i] += v;
    }
}

static json_t *key_array(const ml_eval_task *t, const int32_t *pos, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_string(t->keys[pos[i]]));
    return a;
}

/* One rankings.jsonl line. */
static void write_ranking(FILE *f, const task_ctx *c, const ml_eval_query *q, const char *problem,
                          const int32_t *ranked, const float *rs, int n, const int32_t *sub,
                          int nsub) {
    const ml_eval_task *t = c->t;
    json_t *o = json_pack("{s:s, s:s, s:s}", "task", t->name, "query", q->id, "status",
                          problem ? problem : "ok");
    json_object_set_new(o, "ranking", key_array(t, ranked, n));
    json_t *sc = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(sc, json_real(rs[i]));
    json_object_set_new(o, "scores", sc);
    json_object_set_new(o, "targets", key_array(t, q->targets, q->ntargets));
    if (nsub) json_object_set_new(o, "subset_ranking", key_array(t, sub, nsub));
    json_dumpf(o, f, JSON_COMPACT);
    fputc('\n', f);
    json_decref(o);
}

/* Submission entries: CIRCO wants image ids as numbers, CIRR the names. */
static json_t *submission_list(const ml_eval_task *t, const int32_t *pos, int n, int numeric) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, numeric ? json_integer(strtoll(t->keys[pos[i]], NULL, 10))
                                         : json_string(t->keys[pos[i]]));
    return a;
}

typedef struct run_state {
    ml_model *m;
    const ml_eval_bench *b;
    const ml_eval_opts *o;
    FILE *rankings;
    json_t *sub_main, *sub_subset; /* test split submissions */
} run_state;

/* Embeds queries [i0, i1) (batch): from stored CLIP image embeddings plus
 * the instruction, or CLIP text alone for text-only queries.  ok[i] = 0
 * with why[i] set when a query cannot be embedded. */
static void embed_batch(run_state *rs, const task_ctx *c, int i0, int i1, float *qv, int *ok,
                        const char **why, acc *a) {
    const ml_eval_task *t = c->t;
    int n = i1 - i0, nf = 0;
    float *raw = malloc((size_t)n * (size_t)c->clip_dim * sizeof *raw);
    const char **texts = calloc((size_t)n, sizeof *texts);
    int *slot = calloc((size_t)n, sizeof *slot), *fok = calloc((size_t)n, sizeof *fok);
    float *fout = malloc((size_t)n * (size_t)c->dim * sizeof *fout);
    ml_error e;
    for (int i = 0; i < n; i++) {
        const ml_eval_query *q = &t->q[i0 + i];
        ok[i] = 0, why[i] = q->problem;
        if (q->problem || !raw || !texts || !slot || !fok || !fout) {
            if (!why[i]) why[i] = "out of memory";
            continue;
        }
        int32_t ids[128];
        if (q->text[0] && ml_model_tokenize(rs->m, q->text, 0, ids, &e) != 0) a->truncated++;
        if (text_only(q)) {
            ok[i] = ml_embed_clip_text(rs->m, q->text, 1, qv + (size_t)i * c->dim, &e) == 0;
            if (!ok[i]) why[i] = "text could not be embedded";
            continue;
        }
        const float *cl = query_clip(c, q);
        if (!cl) {
            why[i] = "query image missing or unreadable";
            continue;
        }
        memcpy(raw + (size_t)nf * c->clip_dim, cl, (size_t)c->clip_dim * sizeof *raw);
        texts[nf] = q->text, slot[nf++] = i;
    }
    if (nf > 0) {
        /* truncate = 1: an over-long instruction is cut (counted above) rather
         * than dropped, as CLIP's tokenizer does with truncate=True. */
        ml_embed_from_clip(rs->m, nf, raw, texts, 1, fout, fok, &e);
        for (int j = 0; j < nf; j++) {
            int i = slot[j];
            ok[i] = fok[j];
            if (ok[i]) memcpy(qv + (size_t)i * c->dim, fout + (size_t)j * c->dim,
                              (size_t)c->dim * sizeof *qv);
            else why[i] = "instruction could not be embedded";
        }
    }
    free(raw), free(texts), free(slot), free(fok), free(fout);
}

static int run_queries(run_state *rs, const task_ctx *c, acc *a, ml_error *err) {
    const ml_eval_task *t = c->t;
    int B = rs->o->batch > 0 ? rs->o->batch : 32;
    float *qv = malloc((size_t)B * (size_t)c->dim * sizeof *qv);
    int *ok = malloc((size_t)B * sizeof *ok);
    const char **why = malloc((size_t)B * sizeof *why);
    int32_t *ranked = malloc((size_t)c->depth * sizeof *ranked);
    float *rsc = malloc((size_t)c->depth * sizeof *rsc);
    int rc = (qv && ok && why && ranked && rsc) ? 0 : ml_fail(err, "out of memory");
    ml_progress p;
    char label[128];
    snprintf(label, sizeof label, "%s %s queries", rs->b->name, t->name);
    ml_progress_start(&p, label, t->nq, rs->o->progress);
    for (int i0 = 0; rc == 0 && i0 < t->nq; i0 += B) {
        int i1 = i0 + B < t->nq ? i0 + B : t->nq;
        embed_batch(rs, c, i0, i1, qv, ok, why, a);
        for (int i = i0; rc == 0 && i < i1; i++) {
            const ml_eval_query *q = &t->q[i];
            const float *v = qv + (size_t)(i - i0) * c->dim;
            int n = 0, nsub = 0;
            int32_t sub[3];
            a->nq++;
            if (ok[i - i0]) {
                if ((n = rank_query(c, q, v, ranked, rsc, err)) < 0) rc = -1, n = 0;
                if (q->nsubset && !t->subset_gallery) nsub = rank_subset(c, q, v, sub, 3);
            }
            if (!ok[i - i0]) add_problem(a, q, why[i - i0]);
            else if (!rs->b->submission) a->scored++, score_query(c, q, v, ranked, n, a);
            else a->scored++;
            write_ranking(rs->rankings, c, q, ok[i - i0] ? NULL : why[i - i0], ranked, rsc, n, sub,
                          nsub);
            if (rs->b->submission) {
                int numeric = !strcmp(rs->b->name, "circo");
                json_object_set_new(rs->sub_main, q->id, submission_list(t, ranked, n < 50 ? n : 50,
                                                                         numeric));
                if (rs->sub_subset)
                    json_object_set_new(rs->sub_subset, q->id, submission_list(t, sub, nsub, 0));
            }
        }
        ml_progress_add(&p, i1 - i0);
    }
    ml_progress_finish(&p);
    free(qv), free(ok), free(why), free(ranked), free(rsc);
    return rc;
}

static json_t *task_result(const task_ctx *c, const acc *a, int submission) {
    const ml_eval_task *t = c->t;
    json_t *r = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "task", t->name, "queries",
                          (json_int_t)a->nq, "scored", (json_int_t)a->scored, "unscored",
                          (json_int_t)a->nproblems, "gallery", (json_int_t)t->ngallery,
                          "gallery_missing", (json_int_t)c->gallery_missing,
                          "instructions_truncated", (json_int_t)a->truncated);
    json_object_set(r, "problems", a->problems);
    if (!submission) {
        json_t *mj = json_object();
        char name[32];
        for (int i = 0; i < t->nmetrics; i++)
            json_object_set_new(mj, ml_metric_name(&t->metrics[i], name, sizeof name),
                                json_real(a->nq ? 100.0 * a->sum[i] / (double)a->nq : 0.0));
        json_object_set_new(r, "metrics", mj);
    }
    return r;
}

/* Mean of each metric over the tasks (FashionIQ / DTIN / GeneCIS report it). */
static json_t *average(json_t *tasks) {
    json_t *avg = json_object(), *t0 = json_object_get(json_array_get(tasks, 0), "metrics");
    const char *k;
    json_t *v;
    json_object_foreach(t0, k, v) {
        double s = 0;
        size_t i, n = 0;
        json_t *t;
        json_array_foreach(tasks, i, t) {
            json_t *x = json_object_get(json_object_get(t, "metrics"), k);
            if (json_is_number(x)) s += json_number_value(x), n++;
        }
        json_object_set_new(avg, k, json_real(n ? s / (double)n : 0.0));
    }
    return avg;
}

static int write_json(const char *file, json_t *j, ml_error *err) {
    if (json_dump_file(j, file, JSON_INDENT(1)) != 0) return ml_fail(err, "%s: cannot write", file);
    return 0;
}

static int write_submissions(run_state *rs, json_t *res, ml_error *err) {
    char f1[PATH_BUF], f2[PATH_BUF];
    json_t *files = json_array();
    json_object_set_new(res, "submission", files);
    if (!strcmp(rs->b->name, "circo")) {
        snprintf(f1, sizeof f1, "%s/circo_test_submission.json", rs->o->output);
        json_array_append_new(files, json_string(f1));
        return write_json(f1, rs->sub_main, err);
    }
    snprintf(f1, sizeof f1, "%s/recall_submission_cirr_test1.json", rs->o->output);
    snprintf(f2, sizeof f2, "%s/recall_subset_submission_cirr_test1.json", rs->o->output);
    json_array_append_new(files, json_string(f1));
    json_array_append_new(files, json_string(f2));
    if (write_json(f1, rs->sub_main, err) != 0) return -1;
    return write_json(f2, rs->sub_subset, err);
}

int ml_eval_run(ml_model *m, const ml_eval_bench *b, const ml_eval_opts *o, json_t **results,
                ml_error *err) {
    char file[PATH_BUF];
    *results = NULL;
    if (mkdir(o->output, 0777) != 0 && errno != EEXIST)
        return ml_fail(err, "%s: %s", o->output, strerror(errno));
    snprintf(file, sizeof file, "%s/rankings.jsonl", o->output);
    run_state rs = {m, b, o, fopen(file, "w"), NULL, NULL};
    if (!rs.rankings) return ml_fail(err, "%s: %s", file, strerror(errno));
    if (b->submission) {
        int cirr = !strcmp(b->name, "cirr");
        rs.sub_main = cirr ? json_pack("{s:s, s:s}", "version", "rc2", "metric", "recall")
                           : json_object();
        if (cirr) rs.sub_subset = json_pack("{s:s, s:s}", "version", "rc2", "metric",
                                            "recall_subset");
    }
    json_t *res = json_pack("{s:s, s:s, s:s}", "benchmark", b->name, "split", b->split,
                            "rankings", file);
    json_t *tasks = json_array();
    json_object_set_new(res, "tasks", tasks);
    int rc = 0;
    for (int i = 0; rc == 0 && i < b->ntasks; i++) {
        task_ctx c;
        acc a = {.problems = json_array()};
        rc = open_task(m, &b->tasks[i], o, &c, err);
        if (rc == 0) rc = run_queries(&rs, &c, &a, err);
        if (rc == 0) json_array_append_new(tasks, task_result(&c, &a, b->submission));
        json_decref(a.problems);
        close_task(&c);
    }
    if (fclose(rs.rankings) != 0 && rc == 0) rc = ml_fail(err, "%s: write failed", file);
    if (rc == 0 && b->ntasks > 1 && !b->submission)
        json_object_set_new(res, "average", average(tasks));
    if (rc == 0 && b->submission) rc = write_submissions(&rs, res, err);
    json_decref(rs.sub_main), json_decref(rs.sub_subset);
    if (rc == 0) {
        snprintf(file, sizeof file, "%s/results.json", o->output);
        rc = write_json(file, res, err);
    }
    if (rc != 0) {
        json_decref(res);
        return -1;
    }
    *results = res;
    return 0;
}
