/* loaders.c - each benchmark's annotation files, read as its own repository
 * ships them, turned into eval tasks (bench.h).  The official query wording
 * is built here (docs/eval.md says where each was checked):
 *   circo    "find {shared_concept} but {relative_caption}"  (MagicLens data_utils.py)
 *   cirr     the caption                                      (CIRR)
 *   fiq-*    the captions joined by " and ", in file order   (MagicLens data_utils.py)
 *   dtin-*   "find this object in {domain}"                  (MagicLens data_utils.py)
 *   genecis  the condition as written                         (GeneCIS eval code)
 *   t2i      the caption (text to image through the CLIP towers)
 *   custom   as given in queries.jsonl */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "eval/bench.h"
#include "index/sources.h"

#define PATH_BUF 4096

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

/* The first of data/<cand[i]> that exists, into buf; else data/<cand[0]>
 * (so that the error names the expected place).  Returns 1 if found. */
static int find_under(const char *data, const char *const *cand, int n, char *buf) {
    for (int i = 0; i < n; i++) {
        snprintf(buf, PATH_BUF, "%s/%s", data, cand[i]);
        if (exists(buf)) return 1;
    }
    snprintf(buf, PATH_BUF, "%s/%s", data, cand[0]);
    return 0;
}

static json_t *load_json(const char *path, ml_error *err) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) {
        if (!exists(path)) ml_fail(err, "%s: no such file", path);
        else ml_fail(err, "%s:%d:%d: bad JSON: %s", path, je.line, je.column, je.text);
    }
    return j;
}

static const char *get_str(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* An id that the benchmark writes as a number or a string, as text. */
static int get_key(json_t *o, const char *key, char *buf, size_t n) {
    json_t *v = json_is_object(o) ? json_object_get(o, key) : o;
    if (json_is_integer(v)) snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    else if (json_is_string(v)) snprintf(buf, n, "%s", json_string_value(v));
    else return -1;
    return 0;
}

static int bad_entry(ml_error *err, const char *file, size_t i, const char *what) {
    return ml_fail(err, "%s: entry %zu: %s", file, i, what);
}

/* ---- CIRCO --------------------------------------------------------------- */

static int coco_unlabeled_gallery(ml_eval_task *t, const char *data, ml_error *err) {
    static const char *const dirs[] = {"COCO2017_unlabeled/unlabeled2017", "unlabeled2017"};
    static const char *const infos[] = {"COCO2017_unlabeled/annotations/image_info_unlabeled2017.json",
                                        "annotations/image_info_unlabeled2017.json",
                                        "image_info_unlabeled2017.json"};
    char dir[PATH_BUF], info[PATH_BUF], path[PATH_BUF * 2], key[64];
    find_under(data, dirs, 2, dir);
    if (find_under(data, infos, 3, info)) {
        /* The image list is COCO's: every listed image is in the gallery,
         * whether or not its file is there (missing ones are counted). */
        json_t *j = load_json(info, err);
        if (!j) return -1;
        json_t *imgs = json_object_get(j, "images");
        int rc = json_is_array(imgs) ? 0 : ml_fail(err, "%s: no \"images\" array", info);
        size_t i;
        json_t *e;
        json_array_foreach(imgs, i, e) {
            const char *fn = get_str(e, "file_name");
            if (rc || get_key(e, "id", key, sizeof key) != 0 || !fn) {
                if (!rc) rc = bad_entry(err, info, i, "needs \"id\" and \"file_name\"");
                break;
            }
            snprintf(path, sizeof path, "%s/%s", dir, fn);
            if (ml_eval_gallery_add(t, key, path, err) < 0) rc = -1;
        }
        json_decref(j);
        return rc;
    }
    /* No image list: the folder's files, named by COCO as %012d.jpg. */
    DIR *d = opendir(dir);
    if (!d)
        return ml_fail(err, "%s: %s (the CIRCO gallery: COCO 2017 unlabeled images, or "
                       "image_info_unlabeled2017.json)", dir, strerror(errno));
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        char *end;
        long long id = strtoll(de->d_name, &end, 10);
        if (end == de->d_name || strcmp(end, ".jpg") != 0) continue;
        snprintf(key, sizeof key, "%lld", id);
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (ml_eval_gallery_add(t, key, path, err) < 0) rc = -1;
    }
    closedir(d);
    return rc;
}

static int load_circo(ml_eval_bench *b, const char *data, ml_error *err) {
    char file[PATH_BUF], rel[64];
    snprintf(rel, sizeof rel, "annotations/%s.json", b->split);
    const char *cand[] = {rel, rel + strlen("annotations/")};
    find_under(data, cand, 2, file);
    ml_eval_task *t = ml_eval_add_task(b, b->split, "circo", err);
    if (!t || coco_unlabeled_gallery(t, data, err) != 0) return -1;
    json_t *j = load_json(file, err);
    if (!j) return -1;
    int rc = json_is_array(j) ? 0 : ml_fail(err, "%s: expected a JSON array", file);
    size_t i;
    json_t *e;
    char id[64], ref[64], key[64];
    json_array_foreach(j, i, e) {
        const char *sc = get_str(e, "shared_concept"), *rc_ = get_str(e, "relative_caption");
        if (rc || get_key(e, "id", id, sizeof id) || get_key(e, "reference_img_id", ref, sizeof ref) ||
            !sc || !rc_) {
            if (!rc) rc = bad_entry(err, file, i, "needs id, reference_img_id, shared_concept, "
                                                  "relative_caption");
            break;
        }
        char text[2048];
        snprintf(text, sizeof text, "find %s but %s", sc, rc_);
        ml_eval_query *q = ml_eval_add_query(t, id, NULL, text, err);
        if (!q) {
            rc = -1;
            break;
        }
        if ((q->ref = ml_eval_gallery_find(t, ref)) < 0)
            ml_eval_query_problem(q, "reference image %s is not in the gallery", ref);
        if (b->submission) continue;
        json_t *gt = json_object_get(e, "gt_img_ids");
        if (!json_is_array(gt) || json_array_size(gt) == 0) {
            ml_eval_query_problem(q, "no gt_img_ids in %s", file);
            continue;
        }
        size_t g;
        json_t *ge;
        json_array_foreach(gt, g, ge) {
            if (get_key(ge, NULL, key, sizeof key) != 0) {
                ml_eval_query_problem(q, "gt_img_ids[%zu] is not an id", g);
                continue;
            }
            int32_t pos = ml_eval_gallery_find(t, key);
            if (pos < 0) ml_eval_query_problem(q, "ground truth %s is not in the gallery", key);
            else if (ml_eval_query_target(q, pos, err) != 0) rc = -1;
        }
    }
    json_decref(j);
    static const int ks[] = {5, 10, 25, 50};
    for (int k = 0; k < 4; k++) ml_eval_add_metric(t, ML_METRIC_MAP, ks[k]);
    return rc;
}

/* ---- CIRR ---------------------------------------------------------------- */

/* Image root: the split file's paths ("./dev/dev-1-0-img0.png") are relative
 * to the folder holding dev/ test1/ train/, which the CIRR release and the
 * CLIP4Cir/SEARLE layouts place differently. */
static void cirr_root(const char *data, const char *first_rel, char *root) {
    static const char *const cand[] = {".", "cirr_dataset", "img_raw", "images"};
    char p[PATH_BUF * 2];
    for (int i = 0; i < 4; i++) {
        snprintf(root, PATH_BUF, "%s/%s", data, cand[i]);
        snprintf(p, sizeof p, "%s/%s", root, first_rel);
        if (exists(p)) return;
    }
    snprintf(root, PATH_BUF, "%s", data);
}

static int cirr_gallery(ml_eval_task *t, const char *data, const char *split, ml_error *err) {
    char file[PATH_BUF], rel[128], root[PATH_BUF], path[PATH_BUF * 2];
    snprintf(rel, sizeof rel, "image_splits/split.rc2.%s.json", split);
    const char *cand[] = {rel, rel + strlen("image_splits/")};
    find_under(data, cand, 2, file);
    json_t *j = load_json(file, err);
    if (!j) return -1;
    if (!json_is_object(j) || json_object_size(j) == 0) {
        json_decref(j);
        return ml_fail(err, "%s: expected an object {name: path}", file);
    }
    const char *k;
    json_t *v;
    int rc = 0, first = 1;
    json_object_foreach(j, k, v) {
        if (!json_is_string(v)) {
            rc = ml_fail(err, "%s: %s: path is not a string", file, k);
            break;
        }
        if (first) cirr_root(data, json_string_value(v), root), first = 0;
        snprintf(path, sizeof path, "%s/%s", root, json_string_value(v));
        if (ml_eval_gallery_add(t, k, path, err) < 0) {
            rc = -1;
            break;
        }
    }
    json_decref(j);
    return rc;
}

static int load_cirr(ml_eval_bench *b, const char *data, ml_error *err) {
    const char *split = !strcmp(b->split, "test") ? "test1" : b->split;
    ml_eval_task *t = ml_eval_add_task(b, split, "cirr", err);
    if (!t || cirr_gallery(t, data, split, err) != 0) return -1;
    char file[PATH_BUF], rel[128];
    snprintf(rel, sizeof rel, "captions/cap.rc2.%s.json", split);
    const char *cand[] = {rel, rel + strlen("captions/")};
    find_under(data, cand, 2, file);
    json_t *j = load_json(file, err);
    if (!j) return -1;
    int rc = json_is_array(j) ? 0 : ml_fail(err, "%s: expected a JSON array", file);
    size_t i;
    json_t *e;
    char id[64];
    json_array_foreach(j, i, e) {
        const char *ref = get_str(e, "reference"), *cap = get_str(e, "caption");
        json_t *members = json_object_get(json_object_get(e, "img_set"), "members");
        if (rc || get_key(e, "pairid", id, sizeof id) || !ref || !cap) {
            if (!rc) rc = bad_entry(err, file, i, "needs pairid, reference, caption");
            break;
        }
        ml_eval_query *q = ml_eval_add_query(t, id, NULL, cap, err);
        if (!q) {
            rc = -1;
            break;
        }
        if ((q->ref = ml_eval_gallery_find(t, ref)) < 0)
            ml_eval_query_problem(q, "reference %s is not in the split file", ref);
        size_t m;
        json_t *me;
        if (!json_is_array(members)) ml_eval_query_problem(q, "no img_set.members");
        json_array_foreach(members, m, me) {
            int32_t pos = json_is_string(me) ? ml_eval_gallery_find(t, json_string_value(me)) : -1;
            if (pos < 0) ml_eval_query_problem(q, "img_set member %zu is not in the split file", m);
            else if (ml_eval_query_subset(q, pos, err) != 0) rc = -1;
        }
        if (b->submission) continue;
        const char *tgt = get_str(e, "target_hard");
        int32_t pos = tgt ? ml_eval_gallery_find(t, tgt) : -1;
        if (!tgt) ml_eval_query_problem(q, "no target_hard");
        else if (pos < 0) ml_eval_query_problem(q, "target %s is not in the split file", tgt);
        else if (ml_eval_query_target(q, pos, err) != 0) rc = -1;
    }
    json_decref(j);
    t->exclude_ref = 1;
    static const int ks[] = {1, 5, 10, 50}, ss[] = {1, 2, 3};
    for (int k = 0; k < 4; k++) ml_eval_add_metric(t, ML_METRIC_RECALL, ks[k]);
    for (int k = 0; k < 3; k++) ml_eval_add_metric(t, ML_METRIC_RECALL_SUBSET, ss[k]);
    return rc;
}

/* ---- FashionIQ ----------------------------------------------------------- */

static int load_fiq_cat(ml_eval_bench *b, const char *data, const char *cat, ml_error *err) {
    char file[PATH_BUF], rel[128], iname[64], path[PATH_BUF * 2], imgdir[PATH_BUF];
    snprintf(iname, sizeof iname, "fiq-%s", cat);
    ml_eval_task *t = ml_eval_add_task(b, cat, iname, err);
    if (!t) return -1;
    const char *dcand[] = {"images", "image_data"};
    find_under(data, dcand, 2, imgdir);
    snprintf(rel, sizeof rel, "image_splits/split.%s.%s.json", cat, b->split);
    const char *scand[] = {rel, rel + strlen("image_splits/")};
    find_under(data, scand, 2, file);
    json_t *j = load_json(file, err);
    if (!j) return -1;
    int rc = json_is_array(j) ? 0 : ml_fail(err, "%s: expected a JSON array of names", file);
    size_t i;
    json_t *e;
    json_array_foreach(j, i, e) {
        if (rc || !json_is_string(e)) {
            if (!rc) rc = bad_entry(err, file, i, "not a string");
            break;
        }
        snprintf(path, sizeof path, "%s/%s.png", imgdir, json_string_value(e));
        if (ml_eval_gallery_add(t, json_string_value(e), path, err) < 0) rc = -1;
    }
    json_decref(j);
    if (rc) return -1;
    snprintf(rel, sizeof rel, "captions/cap.%s.%s.json", cat, b->split);
    const char *ccand[] = {rel, rel + strlen("captions/")};
    find_under(data, ccand, 2, file);
    if (!(j = load_json(file, err))) return -1;
    rc = json_is_array(j) ? 0 : ml_fail(err, "%s: expected a JSON array", file);
    json_array_foreach(j, i, e) {
        const char *cand = get_str(e, "candidate"), *tgt = get_str(e, "target");
        json_t *caps = json_object_get(e, "captions");
        if (rc || !cand || !tgt || !json_is_array(caps)) {
            if (!rc) rc = bad_entry(err, file, i, "needs candidate, target, captions");
            break;
        }
        char text[2048] = "", id[32];
        size_t c, len = 0;
        json_t *ce;
        json_array_foreach(caps, c, ce) {
            if (!json_is_string(ce)) continue;
            len += (size_t)snprintf(text + len, len < sizeof text ? sizeof text - len : 0, "%s%s",
                                    c ? " and " : "", json_string_value(ce));
            if (len >= sizeof text) len = sizeof text - 1;
        }
        snprintf(id, sizeof id, "%zu", i);
        ml_eval_query *q = ml_eval_add_query(t, id, NULL, text, err);
        if (!q) {
            rc = -1;
            break;
        }
        if ((q->ref = ml_eval_gallery_find(t, cand)) < 0)
            ml_eval_query_problem(q, "candidate %s is not in the split file", cand);
        int32_t pos = ml_eval_gallery_find(t, tgt);
        if (pos < 0) ml_eval_query_problem(q, "target %s is not in the split file", tgt);
        else if (ml_eval_query_target(q, pos, err) != 0) rc = -1;
    }
    json_decref(j);
    ml_eval_add_metric(t, ML_METRIC_RECALL, 10);
    ml_eval_add_metric(t, ML_METRIC_RECALL, 50);
    return rc;
}

static int load_fiq(ml_eval_bench *b, const char *data, const char *which, ml_error *err) {
    if (strcmp(b->split, "val") != 0)
        return ml_fail(err, "FashionIQ: only the val split has public targets (got --split %s)",
                       b->split);
    static const char *const cats[] = {"dress", "shirt", "toptee"};
    for (int c = 0; c < 3; c++)
        if ((!which || !strcmp(which, cats[c])) && load_fiq_cat(b, data, cats[c], err) != 0)
            return -1;
    return 0;
}

/* ---- DTIN (Pic2Word's ImageNet domain conversion) ------------------------- */

static const char *const DTIN_DOMAINS[] = {"cartoon", "origami", "toy", "sculpture"};

typedef struct dtin_line {
    char *path;
    long label;
} dtin_line;

/* "imgnet/real/n04086273/ILSVRC2012_val_00015728.JPEG 2 " per line. */
static int read_dtin(const char *file, dtin_line **out, size_t *n, ml_error *err) {
    FILE *f = fopen(file, "r");
    if (!f) return ml_fail(err, "%s: %s", file, strerror(errno));
    char *line = NULL;
    size_t cap = 0, m = 0, lcap = 0;
    long lineno = 0;
    dtin_line *a = NULL;
    int rc = 0;
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        char path[PATH_BUF];
        long label;
        if (sscanf(line, "%4095s %ld", path, &label) != 2) {
            if (strspn(line, " \t\r\n") == strlen(line)) continue;
            rc = ml_fail(err, "%s:%ld: expected \"path label\"", file, lineno);
            break;
        }
        if (m == lcap) {
            dtin_line *p = realloc(a, (lcap = lcap ? lcap * 2 : 1024) * sizeof *a);
            if (!p) {
                rc = ml_fail(err, "out of memory");
                break;
            }
            a = p;
        }
        a[m].label = label;
        if (!(a[m++].path = strdup(path))) {
            rc = ml_fail(err, "out of memory");
            break;
        }
    }
    free(line);
    fclose(f);
    *out = a, *n = m;
    return rc;
}

static void free_dtin(dtin_line *a, size_t n) {
    for (size_t i = 0; i < n; i++) free(a[i].path);
    free(a);
}

/* Image paths in Pic2Word's files start with "imgnet/" ("imgnet/real/...",
 * "imgnet/imagenet-r/...").  MagicLens's build_dtin_dataset (data_utils.py)
 * drops that first component and reads them under its dtin/ folder, so both
 * layouts are accepted: --data/imgnet/real/... or --data/real/...  The
 * first entry decides; with neither present the official layout is assumed
 * (the missing images are then counted and named). */
static int dtin_strip_first(const char *data, const dtin_line *tg, size_t nt) {
    char p[PATH_BUF * 2];
    if (nt == 0) return 1;
    snprintf(p, sizeof p, "%s/%s", data, tg[0].path);
    if (exists(p)) return 0;
    return 1;
}

static const char *dtin_rel(const char *path, int strip) {
    const char *s = strchr(path, '/');
    return strip && s ? s + 1 : path;
}

typedef struct label_pos {
    long label;
    int32_t pos;
} label_pos;

static int cmp_label_pos(const void *a, const void *b) {
    const label_pos *x = a, *y = b;
    if (x->label != y->label) return x->label < y->label ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static int dtin_task(ml_eval_bench *b, const char *root, int d, const dtin_line *tg, size_t nt,
                     const dtin_line *qs, size_t nq, ml_error *err) {
    ml_eval_task *t = ml_eval_add_task(b, DTIN_DOMAINS[d], "dtin", err);
    if (!t) return -1;
    int strip = dtin_strip_first(root, tg, nt);
    char path[PATH_BUF * 2], text[128], id[PATH_BUF + 64];
    /* Gallery position of each target line (a path listed twice is one
     * gallery item; its first label is the one kept). */
    label_pos *lp = malloc((nt + 1) * sizeof *lp);
    if (!lp) return ml_fail(err, "out of memory");
    int rc = 0;
    size_t nlp = 0;
    for (size_t i = 0; rc == 0 && i < nt; i++) {
        snprintf(path, sizeof path, "%s/%s", root, dtin_rel(tg[i].path, strip));
        int32_t before = t->ngallery, p = ml_eval_gallery_add(t, tg[i].path, path, err);
        if (p < 0) rc = -1;
        else if (p == before) lp[nlp++] = (label_pos){tg[i].label, p};
    }
    qsort(lp, nlp, sizeof *lp, cmp_label_pos);
    snprintf(text, sizeof text, "find this object in %s", DTIN_DOMAINS[d]);
    for (size_t i = 0; rc == 0 && i < nq; i++) {
        /* The official query id: "<file name>-class-<class>-to-<domain>". */
        const char *slash = strrchr(qs[i].path, '/');
        snprintf(id, sizeof id, "%s-class-%ld-to-%s", slash ? slash + 1 : qs[i].path,
                 qs[i].label, DTIN_DOMAINS[d]);
        snprintf(path, sizeof path, "%s/%s", root, dtin_rel(qs[i].path, strip));
        ml_eval_query *q = ml_eval_add_query(t, id, path, text, err);
        if (!q) {
            rc = -1;
            break;
        }
        q->ref = ml_eval_gallery_find(t, qs[i].path);
        /* build_dtin_dataset: gallery ids are the target file's labels and the
         * target is domain * 1000 + class; any gallery image with that label
         * counts (its recall compares labels). */
        long want = qs[i].label + 1000L * d;
        size_t lo = 0, hi = nlp;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (lp[mid].label < want) lo = mid + 1;
            else hi = mid;
        }
        for (size_t g = lo; rc == 0 && g < nlp && lp[g].label == want; g++)
            if (ml_eval_query_target(q, lp[g].pos, err) != 0) rc = -1;
        if (rc == 0 && q->ntargets == 0)
            ml_eval_query_problem(q, "no %s image of class %ld in the targets file (scores 0, "
                                  "as in the official evaluation)", DTIN_DOMAINS[d], qs[i].label);
    }
    free(lp);
    if (rc) return -1;
    ml_eval_add_metric(t, ML_METRIC_RECALL, 10);
    ml_eval_add_metric(t, ML_METRIC_RECALL, 50);
    return 0;
}

static int load_dtin(ml_eval_bench *b, const char *data, const char *which, ml_error *err) {
    char qf[PATH_BUF], tf[PATH_BUF];
    const char *qc[] = {"imgnet_real_query.txt", "imgnet/imgnet_real_query.txt"};
    const char *tc[] = {"imgnet_targets.txt", "imgnet/imgnet_targets.txt"};
    find_under(data, qc, 2, qf);
    find_under(data, tc, 2, tf);
    dtin_line *qs = NULL, *tg = NULL;
    size_t nq = 0, nt = 0;
    int rc = read_dtin(qf, &qs, &nq, err);
    if (rc == 0) rc = read_dtin(tf, &tg, &nt, err);
    for (int d = 0; rc == 0 && d < 4; d++)
        if (!which || !strcmp(which, DTIN_DOMAINS[d]))
            rc = dtin_task(b, data, d, tg, nt, qs, nq, err);
    free_dtin(qs, nq), free_dtin(tg, nt);
    return rc;
}

/* ---- GeneCIS --------------------------------------------------------------- */

static int genecis_add_img(ml_eval_task *t, const char *coco, json_t *o, ml_error *err) {
    char key[64], path[PATH_BUF * 2];
    if (get_key(o, "val_image_id", key, sizeof key) != 0) return -2;
    snprintf(path, sizeof path, "%s/%012lld.jpg", coco, strtoll(key, NULL, 10));
    return ml_eval_gallery_add(t, key, path, err);
}

/* Adds one GeneCIS image (reference, target or gallery entry) to the task:
 * its position, -1 on error (err set), -2 when the entry lacks its fields. */
typedef int32_t (*genecis_add_fn)(void *ctx, ml_eval_task *t, json_t *o, ml_error *err);

/* The loop both kinds of GeneCIS task share: one query per entry, with the
 * condition as the instruction, the reference as the query image, and the
 * official gallery [target] + distractors as its subset.  `need` names the
 * fields an image entry must have. */
static int load_genecis_entries(ml_eval_task *t, const char *file, genecis_add_fn add, void *ctx,
                                const char *need, ml_error *err) {
    char id[32], msg[160];
    json_t *j = load_json(file, err);
    if (!j) return -1;
    int rc = json_is_array(j) ? 0 : ml_fail(err, "%s: expected a JSON array", file);
    size_t i;
    json_t *e;
    json_array_foreach(j, i, e) {
        const char *cond = get_str(e, "condition");
        json_t *gal = json_object_get(e, "gallery");
        if (rc || !cond || !json_is_array(gal)) {
            if (!rc) rc = bad_entry(err, file, i, "needs condition, reference, target, gallery");
            break;
        }
        snprintf(id, sizeof id, "%zu", i);
        ml_eval_query *q = ml_eval_add_query(t, id, NULL, cond, err);
        int32_t ref = q ? add(ctx, t, json_object_get(e, "reference"), err) : -1;
        int32_t tgt = q ? add(ctx, t, json_object_get(e, "target"), err) : -1;
        if (!q || ref == -1 || tgt == -1) {
            rc = -1;
            break;
        }
        if (ref < 0 || tgt < 0) {
            snprintf(msg, sizeof msg, "reference/target need %s", need);
            rc = bad_entry(err, file, i, msg);
            break;
        }
        q->ref = ref;
        /* The official gallery is [target] + distractors; target first. */
        if (ml_eval_query_target(q, tgt, err) || ml_eval_query_subset(q, tgt, err)) rc = -1;
        size_t g;
        json_t *ge;
        json_array_foreach(gal, g, ge) {
            int32_t pos = add(ctx, t, ge, err);
            if (pos == -1 || (pos >= 0 && ml_eval_query_subset(q, pos, err) != 0)) rc = -1;
            if (pos == -2) ml_eval_query_problem(q, "gallery[%zu] needs %s", g, need);
        }
    }
    json_decref(j);
    t->subset_gallery = 1;
    for (int k = 1; k <= 3; k++) ml_eval_add_metric(t, ML_METRIC_RECALL, k);
    return rc;
}

static int32_t add_coco(void *ctx, ml_eval_task *t, json_t *o, ml_error *err) {
    return genecis_add_img(t, ctx, o, err);
}

static int load_genecis_task(ml_eval_bench *b, const char *data, const char *task,
                             const char *file, ml_error *err) {
    char coco[PATH_BUF];
    const char *cc[] = {"val2017", "coco/val2017", "coco2017/val2017"};
    find_under(data, cc, 3, coco);
    ml_eval_task *t = ml_eval_add_task(b, task, "genecis-coco", err);
    return t ? load_genecis_entries(t, file, add_coco, coco, "val_image_id", err) : -1;
}

/* Attribute tasks: Visual Genome 1.2 images ("image_id" as a string or a
 * number, {image_id}.jpg as GeneCIS's config.py expects them, in one merged
 * folder or VG's own VG_100K / VG_100K_2) cut to "instance_bbox" [x, y, w,
 * h].  Each crop is a gallery item of its own, read from a PNG under
 * <output>/genecis-crops/ that the runner writes once. */
static void vg_image(const char *data, const char *id, char *path) {
    static const char *const dirs[] = {"VG_100K_all", "VG_100K", "VG_100K_2",
                                       "visual_genome/VG_100K_all", "visual_genome/VG_100K",
                                       "visual_genome/VG_100K_2", "images"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        snprintf(path, PATH_BUF * 2, "%s/%s/%s.jpg", data, dirs[i], id);
        if (exists(path)) return;
    }
    snprintf(path, PATH_BUF * 2, "%s/%s/%s.jpg", data, dirs[0], id);
}

/* Gallery position of an attribute-task instance; -1 on a fatal error,
 * -2 when the entry lacks image_id / instance_bbox. */
static int32_t genecis_add_crop(ml_eval_task *t, const ml_eval_bench *b, const char *data,
                                json_t *o, ml_error *err) {
    char id[64], key[256], src[PATH_BUF * 2], crop[PATH_BUF + 320];
    json_t *bb = json_object_get(o, "instance_bbox");
    if (get_key(o, "image_id", id, sizeof id) != 0 || !json_is_array(bb) ||
        json_array_size(bb) != 4 || strchr(id, '/'))
        return -2;
    double box[4];
    for (int i = 0; i < 4; i++) {
        json_t *v = json_array_get(bb, (size_t)i);
        if (!json_is_number(v)) return -2;
        box[i] = json_number_value(v);
    }
    snprintf(key, sizeof key, "%s_%.17g_%.17g_%.17g_%.17g", id, box[0], box[1], box[2], box[3]);
    int32_t pos = ml_eval_gallery_find(t, key);
    if (pos >= 0) return pos;
    vg_image(data, id, src);
    snprintf(crop, sizeof crop, "%s/genecis-crops/%s.png", b->work, key);
    return ml_eval_gallery_add_crop(t, key, crop, src, box, err);
}

typedef struct crop_ctx {
    const ml_eval_bench *b;
    const char *data;
} crop_ctx;

static int32_t add_crop(void *ctx, ml_eval_task *t, json_t *o, ml_error *err) {
    const crop_ctx *c = ctx;
    return genecis_add_crop(t, c->b, c->data, o, err);
}

static int load_genecis_attr(ml_eval_bench *b, const char *data, const char *task,
                             const char *file, ml_error *err) {
    char dir[PATH_BUF + 32];
    snprintf(dir, sizeof dir, "%s/genecis-crops", b->work);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return ml_fail(err, "%s: %s", dir, strerror(errno));
    ml_eval_task *t = ml_eval_add_task(b, task, "genecis-vg", err);
    crop_ctx c = {b, data};
    return t ? load_genecis_entries(t, file, add_crop, &c, "image_id and instance_bbox [x, y, w, h]",
                                    err)
             : -1;
}

/* The four tasks in the order of GeneCIS's tables; the files that exist
 * are run (at least one is needed). */
static int load_genecis(ml_eval_bench *b, const char *data, ml_error *err) {
    static const char *const tasks[] = {"focus_attribute", "change_attribute", "focus_object",
                                        "change_object"};
    char file[PATH_BUF], rel[2][128];
    int found = 0;
    for (int i = 0; i < 4; i++) {
        snprintf(rel[0], sizeof rel[0], "%s.json", tasks[i]);
        snprintf(rel[1], sizeof rel[1], "genecis/%s.json", tasks[i]);
        const char *cand[] = {rel[0], rel[1]};
        if (!find_under(data, cand, 2, file)) continue;
        found++;
        int rc = i < 2 ? load_genecis_attr(b, data, tasks[i], file, err)
                       : load_genecis_task(b, data, tasks[i], file, err);
        if (rc != 0) return -1;
    }
    if (!found)
        return ml_fail(err, "%s: none of focus_attribute.json, change_attribute.json, "
                       "focus_object.json, change_object.json", data);
    return 0;
}

/* ---- text to image ------------------------------------------------------- */

static int load_t2i(ml_eval_bench *b, const char *data, ml_error *err) {
    char file[PATH_BUF], imgdir[PATH_BUF], path[PATH_BUF * 2], key[64], id[32];
    const char *fc[] = {"captions.json", "annotations/captions_val2017.json"};
    const char *dc[] = {"images", "val2017", "."};
    if (!find_under(data, fc, 2, file))
        return ml_fail(err, "%s: no captions.json (COCO-style) found", data);
    find_under(data, dc, 3, imgdir);
    ml_eval_task *t = ml_eval_add_task(b, "captions", "t2i", err);
    json_t *j = t ? load_json(file, err) : NULL;
    if (!j) return -1;
    json_t *imgs = json_object_get(j, "images"), *anns = json_object_get(j, "annotations");
    int rc = json_is_array(imgs) && json_is_array(anns)
                 ? 0
                 : ml_fail(err, "%s: needs \"images\" and \"annotations\" arrays", file);
    size_t i;
    json_t *e;
    json_array_foreach(imgs, i, e) {
        const char *fn = get_str(e, "file_name");
        if (rc || !fn || get_key(e, "id", key, sizeof key) != 0) {
            if (!rc) rc = bad_entry(err, file, i, "image needs id and file_name");
            break;
        }
        snprintf(path, sizeof path, "%s/%s", imgdir, fn);
        if (ml_eval_gallery_add(t, key, path, err) < 0) rc = -1;
    }
    json_array_foreach(anns, i, e) {
        const char *cap = get_str(e, "caption");
        if (rc || !cap || get_key(e, "image_id", key, sizeof key) != 0) {
            if (!rc) rc = bad_entry(err, file, i, "annotation needs image_id and caption");
            break;
        }
        if (get_key(e, "id", id, sizeof id) != 0) snprintf(id, sizeof id, "%zu", i);
        ml_eval_query *q = ml_eval_add_query(t, id, NULL, cap, err);
        if (!q) {
            rc = -1;
            break;
        }
        int32_t pos = ml_eval_gallery_find(t, key);
        if (pos < 0) ml_eval_query_problem(q, "image %s is not in \"images\"", key);
        else if (ml_eval_query_target(q, pos, err) != 0) rc = -1;
    }
    json_decref(j);
    for (int k = 1; k <= 10; k += (k == 1 ? 4 : 5)) ml_eval_add_metric(t, ML_METRIC_RECALL, k);
    return rc;
}

/* ---- custom ---------------------------------------------------------------- */

static void warn_stderr(void *ctx, const char *msg) {
    (void)ctx;
    fprintf(stderr, "eval: %s\n", msg);
}

/* A list file is read here rather than by sources.c, so that a listed
 * image that is missing is counted in the report instead of stopping the
 * run. */
static int custom_list(ml_eval_task *t, const char *list, ml_error *err) {
    FILE *f = fopen(list, "r");
    if (!f) return ml_fail(err, "%s: %s", list, strerror(errno));
    char dir[PATH_BUF], path[PATH_BUF * 2], *line = NULL;
    snprintf(dir, sizeof dir, "%s", list);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    size_t cap = 0;
    ssize_t len;
    int rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0 || line[0] == '#') continue;
        snprintf(path, sizeof path, "%s%s%s", line[0] == '/' ? "" : dir, line[0] == '/' ? "" : "/",
                 line);
        char *ap = realpath(path, NULL);
        if (ml_eval_gallery_add(t, ap ? ap : path, path, err) < 0) rc = -1;
        free(ap);
    }
    free(line);
    fclose(f);
    return rc;
}

/* Gallery keys are absolute paths (realpath), so that targets written
 * relative to --data find them. */
static int custom_gallery(ml_eval_task *t, const char *data, ml_error *err) {
    char dir[PATH_BUF], list[PATH_BUF];
    snprintf(dir, sizeof dir, "%s/gallery", data);
    snprintf(list, sizeof list, "%s/gallery.txt", data);
    if (exists(list)) return custom_list(t, list, err);
    if (!exists(dir)) return ml_fail(err, "%s: give a gallery/ folder or gallery.txt", data);
    ml_source_list l = {0};
    int rc = ml_sources_add(&l, dir, warn_stderr, NULL, err);
    if (rc == 0) ml_sources_finish(&l);
    for (size_t i = 0; rc == 0 && i < l.n; i++)
        if (ml_eval_gallery_add(t, l.items[i].path, l.items[i].path, err) < 0) rc = -1;
    ml_sources_free(&l);
    return rc;
}

static int load_custom(ml_eval_bench *b, const char *data, ml_error *err) {
    char file[PATH_BUF], path[PATH_BUF * 2], id[64];
    ml_eval_task *t = ml_eval_add_task(b, "custom", "custom", err);
    if (!t || custom_gallery(t, data, err) != 0) return -1;
    snprintf(file, sizeof file, "%s/queries.jsonl", data);
    FILE *f = fopen(file, "r");
    if (!f) return ml_fail(err, "%s: %s", file, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int rc = 0;
    while (rc == 0 && getline(&line, &cap, f) >= 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == strlen(line)) continue;
        json_error_t je;
        json_t *e = json_loads(line, 0, &je);
        const char *img = get_str(e, "image"), *text = get_str(e, "text");
        json_t *tg = json_object_get(e, "targets");
        if (!json_is_object(e) || (!img && !text) || !json_is_array(tg)) {
            rc = ml_fail(err, "%s:%ld: %s", file, lineno,
                         !e ? je.text : "needs \"targets\" (array) and \"image\" or \"text\"");
            json_decref(e);
            break;
        }
        if (get_key(e, "id", id, sizeof id) != 0) snprintf(id, sizeof id, "%ld", lineno);
        if (img) snprintf(path, sizeof path, "%s%s%s", img[0] == '/' ? "" : data,
                          img[0] == '/' ? "" : "/", img);
        ml_eval_query *q = ml_eval_add_query(t, id, img ? path : NULL, text, err);
        if (!q) rc = -1;
        if (q && img) q->ref = ml_eval_gallery_find(t, q->image);
        size_t i;
        json_t *te;
        json_array_foreach(tg, i, te) {
            if (rc || !q) break;
            if (!json_is_string(te)) {
                ml_eval_query_problem(q, "targets[%zu] is not a string", i);
                continue;
            }
            const char *s = json_string_value(te);
            snprintf(path, sizeof path, "%s%s%s", s[0] == '/' ? "" : data, s[0] == '/' ? "" : "/", s);
            char *ap = realpath(path, NULL);
            int32_t pos = ml_eval_gallery_find(t, ap ? ap : path);
            free(ap);
            if (pos < 0) ml_eval_query_problem(q, "target %s is not in the gallery", s);
            else if (ml_eval_query_target(q, pos, err) != 0) rc = -1;
        }
        if (q && q->ntargets == 0) ml_eval_query_problem(q, "no target in the gallery");
        json_decref(e);
    }
    free(line);
    fclose(f);
    t->exclude_ref = 1;
    static const int ks[] = {1, 5, 10, 50}, ms[] = {5, 10, 25, 50};
    for (int k = 0; k < 4; k++) ml_eval_add_metric(t, ML_METRIC_RECALL, ks[k]);
    for (int k = 0; k < 4; k++) ml_eval_add_metric(t, ML_METRIC_MAP, ms[k]);
    return rc;
}

/* ---- dispatch ---------------------------------------------------------------- */

const char *ml_eval_bench_names(void) {
    return "circo, cirr, fiq, fiq-dress, fiq-shirt, fiq-toptee, dtin, dtin-cartoon, "
           "dtin-origami, dtin-toy, dtin-sculpture, genecis, t2i, custom";
}

static int load_any(ml_eval_bench *b, const char *name, const char *data, ml_error *err) {
    if (!strcmp(name, "circo")) return load_circo(b, data, err);
    if (!strcmp(name, "cirr")) return load_cirr(b, data, err);
    if (!strcmp(name, "fiq")) return load_fiq(b, data, NULL, err);
    if (!strncmp(name, "fiq-", 4)) {
        if (strcmp(name + 4, "dress") && strcmp(name + 4, "shirt") && strcmp(name + 4, "toptee"))
            return ml_fail(err, "unknown FashionIQ category '%s' (dress, shirt, toptee)", name + 4);
        return load_fiq(b, data, name + 4, err);
    }
    if (!strcmp(name, "dtin")) return load_dtin(b, data, NULL, err);
    if (!strncmp(name, "dtin-", 5)) {
        for (int d = 0; d < 4; d++)
            if (!strcmp(name + 5, DTIN_DOMAINS[d])) return load_dtin(b, data, name + 5, err);
        return ml_fail(err, "unknown DTIN domain '%s' (cartoon, origami, toy, sculpture)",
                       name + 5);
    }
    if (!strcmp(name, "genecis")) return load_genecis(b, data, err);
    if (!strcmp(name, "t2i")) return load_t2i(b, data, err);
    if (!strcmp(name, "custom")) return load_custom(b, data, err);
    return ml_fail(err, "unknown benchmark '%s' (one of: %s)", name, ml_eval_bench_names());
}

int ml_eval_load(const char *name, const char *split, const char *data, const char *work,
                 ml_eval_bench *b, ml_error *err) {
    memset(b, 0, sizeof *b);
    if (!split) split = "val";
    if (strcmp(split, "val") && strcmp(split, "test") && strcmp(split, "test1"))
        return ml_fail(err, "--split %s: use val or test", split);
    int test = strcmp(split, "val") != 0;
    if (test && strcmp(name, "circo") && strcmp(name, "cirr"))
        return ml_fail(err, "%s: only the val split has public targets here; the test split is "
                       "scored by a server for circo and cirr only", name);
    if (!work || !*work) return ml_fail(err, "no output folder");
    if (mkdir(work, 0777) != 0 && errno != EEXIST)
        return ml_fail(err, "%s: %s", work, strerror(errno));
    if (!(b->work = realpath(work, NULL))) return ml_fail(err, "%s: %s", work, strerror(errno));
    b->name = strdup(name);
    b->split = strdup(!strcmp(split, "test1") ? "test" : split);
    b->submission = test;
    if (!b->name || !b->split) {
        ml_eval_bench_free(b);
        return ml_fail(err, "out of memory");
    }
    if (load_any(b, name, data, err) != 0) {
        ml_eval_bench_free(b);
        return -1;
    }
    return 0;
}
