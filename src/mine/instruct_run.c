/* instruct_run.c - the `mine instruct` stage: pairs.jsonl -> triplets.jsonl
 * (query image, instruction, target image), the instruction written by an
 * OpenAI-compatible chat endpoint from the pair's metadata, or by templates
 * with --no-llm (docs/mining-pairs.md).
 *
 * Phases: read and deduplicate the pairs; (--vision-url) caption each image
 * once; render the prompt of each pair and look its key up in the cache;
 * ask the endpoint for the keys not cached, on --concurrency threads, each
 * answer appended to the cache and flushed to disk at once; finally write
 * the triplets in input order to OUT.tmp and rename it.  The cache is thus
 * the run's journal: a killed run, run again, asks only what was not
 * answered yet and writes the same output. */
#include "mine/instruct_run.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "index/sources.h"
#include "mine/llm.h"
#include "mine/pages.h" /* ml_counts */
#include "mine/pairs.h" /* ml_path_relative */

#define ME "magiclens mine instruct"
#define WARNINGS_SHOWN 20
#define MAX_FIELD_BYTES 300
#define MAX_CAPTION_BYTES 400
#define MAX_THREADS ML_INSTRUCT_MAX_THREADS

typedef ml_instruct_opts args;

typedef struct item {
    long line;
    json_t *pair;      /* owned */
    char *qout, *tout; /* image keys as written to the output */
    char *qabs, *tabs; /* absolute keys: deduplication, reading images */
    char *vals[ML_NFIELDS];
    char *host;
    const char *forbid[5];
    int dup, job;
    char *instruction; /* the result (owned) */
    const char *source, *drop;
} item;

enum { JOB_INSTRUCTION, JOB_CAPTION };

typedef struct job {
    int kind;
    char key[33];
    json_t *messages;          /* instruction: the rendered prompt */
    const char *image, *url;   /* caption: absolute image key, its URL */
    const char *const *forbid; /* instruction: strings the answer must not copy */
    char *result;
    const char *drop;
} job;

typedef struct run {
    const args *a;
    ml_prompt prompt;
    ml_llm llm, vision;
    ml_cache cache;
    item *items;
    size_t n;
    job *jobs;
    size_t njobs;
    atomic_size_t next;
    atomic_int stop;
    pthread_mutex_t mu; /* cache, counters, bar, fatal */
    ml_progress bar;
    char fatal[512];
    ml_counts dropped, invalid, caption_dropped;
    long long bad_lines, duplicates, cached, asked, captions_cached, captions_asked, out, warnings;
} run;

static void warnf(run *r, const char *fmt, ...) ML_PRINTF(2, 3);
/* Called by the workers too: never with r->mu held. */
static void warnf(run *r, const char *fmt, ...) {
    pthread_mutex_lock(&r->mu);
    if (++r->warnings <= WARNINGS_SHOWN) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "%s" ME ": warning: ", r->bar.tty && r->bar.enabled ? "\n" : "");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    pthread_mutex_unlock(&r->mu);
}

/* ---- paths and fields --------------------------------------------------- */

/* An image key of pairs.jsonl ("path" or "tar::member", relative to the
 * pairs file's folder) as seen from `to_dir` (NULL: absolute). */
static char *rekey(const char *key, const char *from_dir, const char *to_dir) {
    const char *sep = strstr(key, ML_TAR_SEP);
    size_t plen = sep ? (size_t)(sep - key) : strlen(key);
    const char *member = sep ? sep : "";
    char *path = strndup(key, plen), *abs = NULL, *res = NULL, *out = NULL;
    if (!path) return NULL;
    if (path[0] == '/') {
        abs = strdup(path);
    } else if ((abs = malloc(strlen(from_dir) + plen + 2))) {
        sprintf(abs, "%s/%s", from_dir, path);
    }
    res = !abs ? NULL : to_dir ? ml_path_relative(abs, to_dir) : strdup(abs);
    if (res && path[0] == '/') { /* absolute paths stay as they are */
        free(res);
        res = strdup(path);
    }
    if (res && (out = malloc(strlen(res) + strlen(member) + 1))) sprintf(out, "%s%s", res, member);
    free(path), free(abs), free(res);
    return out;
}

static const char *sfield(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) && *json_string_value(v) ? json_string_value(v) : NULL;
}

/* A field value for the prompt: whitespace collapsed, at most
 * MAX_FIELD_BYTES (cut at a character boundary). */
static char *field_value(const char *s, size_t max) {
    if (!s) return NULL;
    char *o = malloc(strlen(s) + 1), *w = o;
    if (!o) return NULL;
    int space = 0;
    for (; *s; s++) {
        if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v') {
            space = w != o;
            continue;
        }
        if (space) *w++ = ' ';
        space = 0;
        *w++ = *s;
    }
    *w = 0;
    if ((size_t)(w - o) > max) {
        size_t n = max;
        while (n > 0 && ((unsigned char)o[n] & 0xC0) == 0x80) n--;
        o[n] = 0;
    }
    return o;
}

static char *url_host(const char *url) {
    if (!url) return NULL;
    CURLU *u = curl_url();
    char *host = NULL, *out = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
        out = strdup(host);
    curl_free(host);
    curl_url_cleanup(u);
    return out;
}

/* The text the templates use: alt, else caption, else title. */
static const char *image_text(json_t *img) {
    const char *s = sfield(img, "alt");
    if (!s) s = sfield(img, "caption");
    if (!s) s = sfield(img, "title");
    return s;
}

static void item_free(item *it) {
    json_decref(it->pair);
    free(it->qout), free(it->tout), free(it->qabs), free(it->tabs), free(it->host);
    for (int i = 0; i < ML_NFIELDS; i++) free(it->vals[i]);
    free(it->instruction);
}

/* ---- reading the pairs -------------------------------------------------- */

static int read_pairs(run *r, const char *pairs_dir, const char *out_dir, ml_error *err) {
    FILE *f = fopen(r->a->pairs, "r");
    if (!f) return ml_fail(err, "%s: cannot open: %s", r->a->pairs, strerror(errno));
    /* same folder: keys are copied as they are (no normalisation) */
    char *rp = realpath(pairs_dir, NULL), *ro = realpath(out_dir, NULL);
    int same = rp && ro && !strcmp(rp, ro);
    free(rp), free(ro);
    json_t *seen = json_object();
    char *line = NULL;
    size_t cap = 0, cap_items = 0;
    ssize_t len;
    long lineno = 0;
    int rc = seen ? 0 : ml_fail(err, "out of memory");
    while (rc == 0 && (len = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len) continue;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        json_t *q = json_object_get(o, "query"), *t = json_object_get(o, "target");
        const char *qk = sfield(q, "image"), *tk = sfield(t, "image");
        if (!qk || !tk) {
            warnf(r, "%s line %ld: %s", r->a->pairs, lineno,
                  !o ? je.text : "no query.image / target.image");
            r->bad_lines++;
            json_decref(o);
            continue;
        }
        if (r->n == cap_items) {
            cap_items = cap_items ? 2 * cap_items : 256;
            item *v = realloc(r->items, cap_items * sizeof *v);
            if (!v) {
                json_decref(o);
                rc = ml_fail(err, "out of memory");
                break;
            }
            r->items = v;
        }
        item *it = &r->items[r->n++];
        memset(it, 0, sizeof *it);
        it->line = lineno, it->pair = o, it->job = -1;
        it->qout = same ? strdup(qk) : rekey(qk, pairs_dir, out_dir);
        it->tout = same ? strdup(tk) : rekey(tk, pairs_dir, out_dir);
        it->qabs = rekey(qk, pairs_dir, NULL);
        it->tabs = rekey(tk, pairs_dir, NULL);
        size_t kn = it->qabs && it->tabs ? strlen(it->qabs) + strlen(it->tabs) + 2 : 0;
        char *k = kn ? malloc(kn) : NULL;
        if (!it->qout || !it->tout || !k) {
            free(k);
            rc = ml_fail(err, "out of memory");
            break;
        }
        snprintf(k, kn, "%s\n%s", it->qabs, it->tabs);
        if (json_object_get(seen, k)) {
            it->dup = 1;
            r->duplicates++;
        } else {
            json_object_set_new(seen, k, json_true());
        }
        free(k);
        /* prompt fields */
        static const char *const img_f[] = {"alt", "title", "caption", "context"};
        it->vals[ML_F_PAGE_TITLE] = field_value(sfield(o, "page_title"), MAX_FIELD_BYTES);
        it->host = url_host(sfield(o, "page_url"));
        it->vals[ML_F_PAGE_HOST] = field_value(it->host, MAX_FIELD_BYTES);
        for (int i = 0; i < 4; i++) {
            it->vals[ML_F_QUERY_ALT + i] = field_value(sfield(q, img_f[i]), MAX_FIELD_BYTES);
            it->vals[ML_F_TARGET_ALT + i] = field_value(sfield(t, img_f[i]), MAX_FIELD_BYTES);
        }
        it->forbid[0] = sfield(o, "page_url");
        int nf = it->forbid[0] != NULL;
        if (sfield(q, "url")) it->forbid[nf++] = sfield(q, "url");
        if (sfield(t, "url")) it->forbid[nf++] = sfield(t, "url");
        if (it->host) it->forbid[nf++] = it->host;
        it->forbid[nf] = NULL;
    }
    if (rc == 0 && ferror(f)) rc = ml_fail(err, "%s: read error: %s", r->a->pairs, strerror(errno));
    free(line);
    json_decref(seen);
    fclose(f);
    return rc;
}

/* ---- workers ------------------------------------------------------------ */

static json_t *caption_messages(run *r, const job *j, ml_source_reader *sr, const char **why) {
    uint8_t *data = NULL;
    size_t len = 0;
    ml_error e = {{0}};
    if (ml_source_read(sr, j->image, &data, &len, &e)) {
        warnf(r, "%s: %s", j->image, e.msg);
        *why = "image_unreadable";
        return NULL;
    }
    char *url = ml_llm_data_url(data, len);
    free(data);
    json_t *m = url ? json_pack("[{ss s[{ss ss} {ss s{ss}}]}]", "role", "user", "content", "type",
                                "text", "text", ml_prompt_vision(&r->prompt), "type", "image_url",
                                "image_url", "url", url)
                    : NULL;
    free(url);
    if (!m) *why = "out_of_memory";
    return m;
}

static void record(run *r, job *j, json_t *entry) {
    ml_error e = {{0}};
    pthread_mutex_lock(&r->mu);
    if (entry && ml_cache_put(&r->cache, j->key, entry, &e)) {
        snprintf(r->fatal, sizeof r->fatal, "%s", e.msg);
        atomic_store(&r->stop, 1);
    }
    if (j->drop)
        ml_counts_add(j->kind == JOB_CAPTION ? &r->caption_dropped : &r->dropped, j->drop, 1);
    ml_progress_add(&r->bar, 1);
    pthread_mutex_unlock(&r->mu);
}

static void fail_fatal(run *r, const char *msg) {
    pthread_mutex_lock(&r->mu);
    if (!r->fatal[0]) snprintf(r->fatal, sizeof r->fatal, "%s", msg);
    atomic_store(&r->stop, 1);
    pthread_mutex_unlock(&r->mu);
}

static void do_caption(run *r, job *j, CURL *h, ml_source_reader *sr) {
    json_t *msgs = caption_messages(r, j, sr, &j->drop);
    if (!msgs) {
        record(r, j, NULL);
        return;
    }
    char *answer = NULL;
    ml_error e = {{0}};
    int rc = ml_llm_chat(&r->vision, h, msgs, &answer, &e);
    json_decref(msgs);
    if (rc == ML_LLM_FATAL) {
        fail_fatal(r, e.msg);
        return;
    }
    char *cap = rc == ML_LLM_OK ? field_value(answer, MAX_CAPTION_BYTES) : NULL;
    free(answer);
    if (rc != ML_LLM_OK) {
        warnf(r, "caption of %s: %s", j->image, e.msg);
        j->drop = "llm_failed";
        record(r, j, NULL); /* not cached: a re-run tries again */
    } else if (!cap || !*cap) {
        free(cap);
        j->drop = "empty_caption";
        record(r, j, NULL);
    } else {
        j->result = cap;
        record(r, j, json_pack("{ss ss}", "kind", "caption", "caption", cap));
    }
}

static const char *reason_text(const char *why) {
    return !strcmp(why, "bad_json") || !strcmp(why, "no_instruction")
               ? "it is not a JSON object with an \"instruction\" string"
           : !strcmp(why, "too_short")   ? "the instruction is too short"
           : !strcmp(why, "too_long")    ? "the instruction is too long"
           : !strcmp(why, "not_english") ? "the instruction is not in English"
           : !strcmp(why, "leak")        ? "it refers to the images themselves (\"image 1\", \"the "
                                           "picture\", ...)"
           : !strcmp(why, "url")         ? "it copies a URL, domain or file name"
                                         : "it cannot be used";
}

static void do_instruction(run *r, job *j, CURL *h) {
    json_t *msgs = json_deep_copy(j->messages);
    const char *why = "out_of_memory";
    for (int attempt = 0; msgs && attempt <= r->a->invalid_retries; attempt++) {
        char *answer = NULL;
        ml_error e = {{0}};
        int rc = ml_llm_chat(&r->llm, h, msgs, &answer, &e);
        if (rc == ML_LLM_FATAL) {
            json_decref(msgs);
            fail_fatal(r, e.msg);
            return;
        }
        if (rc != ML_LLM_OK) {
            warnf(r, "%s", e.msg);
            json_decref(msgs);
            j->drop = "llm_failed";
            record(r, j, NULL); /* not cached: a re-run tries again */
            return;
        }
        char *s = ml_instruction_parse(answer, &why);
        if (s && !(why = ml_instruction_check(s, &r->a->check, j->forbid))) {
            free(answer);
            json_decref(msgs);
            j->result = s;
            record(r, j, json_pack("{ss ss}", "kind", "instruction", "instruction", s));
            return;
        }
        free(s);
        pthread_mutex_lock(&r->mu);
        ml_counts_add(&r->invalid, why, 1);
        pthread_mutex_unlock(&r->mu);
        /* tell the model what was wrong: a retry of the same request at a
         * low temperature would likely give the same answer */
        char fix[512];
        snprintf(fix, sizeof fix,
                 "That answer cannot be used: %s. Answer again with only a JSON object "
                 "{\"instruction\": \"...\"} of %d to %d English words.",
                 reason_text(why), r->a->check.min_words, r->a->check.max_words);
        json_array_append_new(msgs, json_pack("{ss ss}", "role", "assistant", "content", answer));
        json_array_append_new(msgs, json_pack("{ss ss}", "role", "user", "content", fix));
        free(answer);
    }
    json_decref(msgs);
    static char reasons[][32] = {"invalid_bad_json", "invalid_no_instruction", "invalid_too_short",
                                 "invalid_too_long", "invalid_not_english",    "invalid_leak",
                                 "invalid_url"};
    j->drop = "invalid_other";
    for (size_t i = 0; i < sizeof reasons / sizeof *reasons; i++)
        if (!strcmp(reasons[i] + 8, why)) j->drop = reasons[i];
    /* cached: the same request would be judged the same way */
    record(r, j, json_pack("{ss ss}", "kind", "instruction", "drop", j->drop));
}

static void *worker(void *arg) {
    run *r = arg;
    CURL *h = curl_easy_init();
    ml_source_reader *sr = ml_source_reader_new();
    if (!h || !sr) fail_fatal(r, "out of memory (curl handle)");
    while (h && sr && !atomic_load(&r->stop)) {
        size_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->njobs) break;
        job *j = &r->jobs[i];
        if (j->kind == JOB_CAPTION)
            do_caption(r, j, h, sr);
        else
            do_instruction(r, j, h);
    }
    if (h) curl_easy_cleanup(h);
    ml_source_reader_free(sr);
    return NULL;
}

static int run_jobs(run *r, const char *label, ml_error *err) {
    if (!r->njobs) return 0;
    int nt = r->a->concurrency < (int)r->njobs ? r->a->concurrency : (int)r->njobs;
    pthread_t th[MAX_THREADS];
    int started = 0;
    atomic_store(&r->next, 0);
    ml_progress_start(&r->bar, label, (long)r->njobs, !r->a->quiet);
    for (int i = 0; i < nt; i++)
        if (pthread_create(&th[started], NULL, worker, r) == 0) started++;
    if (!started) worker(r);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    ml_progress_finish(&r->bar);
    return r->fatal[0] ? ml_fail(err, "%s", r->fatal) : 0;
}

/* ---- phases ------------------------------------------------------------- */

static int add_job(run *r, size_t *cap, job **out, ml_error *err) {
    if (r->njobs == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        job *v = realloc(r->jobs, *cap * sizeof *v);
        if (!v) return ml_fail(err, "out of memory");
        r->jobs = v;
    }
    *out = &r->jobs[r->njobs++];
    memset(*out, 0, sizeof **out);
    return 0;
}

static void free_jobs(run *r) {
    for (size_t i = 0; i < r->njobs; i++) {
        json_decref(r->jobs[i].messages);
        free(r->jobs[i].result);
    }
    free(r->jobs);
    r->jobs = NULL, r->njobs = 0;
}

/* Captions every image once; fills the *_description fields. */
static int captions(run *r, ml_error *err) {
    json_t *keys = json_object(); /* absolute image key -> caption cache key */
    size_t cap = 0;
    int rc = keys ? 0 : ml_fail(err, "out of memory");
    for (size_t i = 0; rc == 0 && i < r->n; i++) {
        item *it = &r->items[i];
        for (int side = 0; rc == 0 && side < 2 && !it->dup; side++) {
            const char *abs = side ? it->tabs : it->qabs;
            if (json_object_get(keys, abs)) continue;
            const char *url = sfield(json_object_get(it->pair, side ? "target" : "query"), "url");
            json_t *kj = json_pack("{si ss ss ss ss ss?}", "v", 1, "kind", "caption", "model",
                                   r->a->vision_model, "prompt", ml_prompt_vision(&r->prompt),
                                   "image", abs, "url", url);
            if (!kj) {
                rc = ml_fail(err, "out of memory");
                break;
            }
            char key[33];
            ml_json_hash(kj, key);
            json_decref(kj);
            json_object_set_new(keys, abs, json_string(key));
            if (ml_cache_get(&r->cache, key)) {
                r->captions_cached++;
                continue;
            }
            job *j;
            if ((rc = add_job(r, &cap, &j, err))) break;
            j->kind = JOB_CAPTION;
            memcpy(j->key, key, sizeof key);
            j->image = abs, j->url = url;
        }
    }
    r->captions_asked = (long long)r->njobs;
    if (rc == 0) rc = run_jobs(r, "mine instruct (captions)", err);
    for (size_t i = 0; rc == 0 && i < r->n; i++) {
        item *it = &r->items[i];
        for (int side = 0; side < 2 && !it->dup; side++) {
            const char *k = json_string_value(json_object_get(keys, side ? it->tabs : it->qabs));
            const char *c = k ? sfield(ml_cache_get(&r->cache, k), "caption") : NULL;
            int f = side ? ML_F_TARGET_DESCRIPTION : ML_F_QUERY_DESCRIPTION;
            if (c && !(it->vals[f] = strdup(c))) rc = ml_fail(err, "out of memory");
        }
    }
    free_jobs(r);
    json_decref(keys);
    return rc;
}

static int instructions(run *r, ml_error *err) {
    json_t *by_key = json_object(); /* cache key -> job index */
    size_t cap = 0;
    int rc = by_key ? 0 : ml_fail(err, "out of memory");
    char(*keys)[33] = calloc(r->n ? r->n : 1, sizeof *keys);
    if (!keys) rc = ml_fail(err, "out of memory");
    for (size_t i = 0; rc == 0 && i < r->n; i++) {
        item *it = &r->items[i];
        if (it->dup) continue;
        json_t *msgs = ml_prompt_render(&r->prompt, (const char *const *)it->vals);
        json_t *kj =
            msgs ? json_pack("{si ss sf si sO s[i i f]}", "v", 1, "model", r->a->llm_model,
                             "temperature", r->a->temperature, "max_tokens", r->a->max_tokens,
                             "messages", msgs, "check", r->a->check.min_words,
                             r->a->check.max_words, r->a->check.min_ascii)
                 : NULL;
        if (!kj) {
            json_decref(msgs);
            rc = ml_fail(err, "out of memory");
            break;
        }
        ml_json_hash(kj, keys[i]);
        json_decref(kj);
        if (ml_cache_get(&r->cache, keys[i])) {
            r->cached++;
            json_decref(msgs);
            continue;
        }
        json_t *ji = json_object_get(by_key, keys[i]);
        if (ji) { /* same request as an earlier pair: one call */
            json_decref(msgs);
            continue;
        }
        job *j;
        if ((rc = add_job(r, &cap, &j, err))) {
            json_decref(msgs);
            break;
        }
        j->kind = JOB_INSTRUCTION;
        memcpy(j->key, keys[i], 33);
        j->messages = msgs;
        j->forbid = it->forbid;
        json_object_set_new(by_key, keys[i], json_integer((json_int_t)(r->njobs - 1)));
    }
    r->asked = (long long)r->njobs;
    if (rc == 0) rc = run_jobs(r, "mine instruct (instructions)", err);
    for (size_t i = 0; rc == 0 && i < r->n; i++) {
        item *it = &r->items[i];
        if (it->dup) continue;
        json_t *e = ml_cache_get(&r->cache, keys[i]);
        const char *s = sfield(e, "instruction");
        if (s) {
            if (!(it->instruction = strdup(s))) rc = ml_fail(err, "out of memory");
            it->source = "llm";
        } else {
            it->drop = e ? sfield(e, "drop") : "llm_failed";
            if (!it->drop) it->drop = "invalid_other";
        }
    }
    free(keys);
    free_jobs(r);
    json_decref(by_key);
    return rc;
}

static void templates(run *r) {
    for (size_t i = 0; i < r->n; i++) {
        item *it = &r->items[i];
        if (it->dup) continue;
        json_t *q = json_object_get(it->pair, "query"), *t = json_object_get(it->pair, "target");
        it->instruction = ml_template_instruction(image_text(q), image_text(t), it->qout, it->tout);
        it->source = "template";
        if (!it->instruction) it->drop = "no_text";
    }
}

static int write_output(run *r, const char *out_dir, ml_error *err) {
    size_t tn = strlen(r->a->output) + 5;
    char *tmp = malloc(tn);
    if (!tmp) return ml_fail(err, "out of memory");
    snprintf(tmp, tn, "%s.tmp", r->a->output);
    FILE *f = fopen(tmp, "w");
    int rc = f ? 0 : ml_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    for (size_t i = 0; rc == 0 && i < r->n; i++) {
        item *it = &r->items[i];
        if (it->dup) continue;
        if (!it->instruction) continue;
        json_t *g = json_object_get(it->pair, "group"),
               *page_url = json_object_get(it->pair, "page_url");
        json_t *o =
            json_pack("{ss ss ss sO sO ss}", "query_image", it->qout, "instruction",
                      it->instruction, "target_image", it->tout, "group", g ? g : json_null(),
                      "page_url", page_url ? page_url : json_null(), "source", it->source);
        if (!o || json_dumpf(o, f, JSON_COMPACT | JSON_PRESERVE_ORDER) || fputc('\n', f) == EOF)
            rc = ml_fail(err, "%s: write failed: %s", tmp, strerror(errno));
        json_decref(o);
        r->out++;
    }
    if (f) {
        int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
        if (fclose(f) != 0 || bad)
            rc = rc ? rc : ml_fail(err, "%s: write failed: %s", tmp, strerror(errno));
    }
    if (rc == 0 && rename(tmp, r->a->output) != 0)
        rc = ml_fail(err, "%s: rename failed: %s", r->a->output, strerror(errno));
    if (rc == 0) rc = ml_fsync_dir(out_dir, err);
    if (rc != 0) unlink(tmp);
    free(tmp);
    return rc;
}

/* Counts drops (from the cache too: an item dropped in an earlier run). */
static void count_drops(run *r) {
    ml_counts_free(&r->dropped);
    for (size_t i = 0; i < r->n; i++)
        if (!r->items[i].dup && !r->items[i].instruction)
            ml_counts_add(&r->dropped, r->items[i].drop ? r->items[i].drop : "unknown", 1);
}

/* ---- stats -------------------------------------------------------------- */

static json_t *llm_json(const ml_llm *c) {
    return json_pack("{sI sI sI sI sI sI sI sI}", "requests", (json_int_t)c->n.requests, "answers",
                     (json_int_t)c->n.answers, "http_429", (json_int_t)c->n.http_429, "http_5xx",
                     (json_int_t)c->n.http_5xx, "http_4xx", (json_int_t)c->n.http_4xx,
                     "network_errors", (json_int_t)c->n.network_errors, "bad_responses",
                     (json_int_t)c->n.bad_responses, "retries", (json_int_t)c->n.retries);
}

static int report(run *r, double secs, int ok, ml_error *err) {
    const args *a = r->a;
    long long lines = (long long)r->n + r->bad_lines;
    fprintf(stderr, "mine instruct: %lld pairs -> %lld triplets in %.2f s (%s)\n", lines, r->out,
            secs, a->no_llm ? "templates" : a->llm_model);
    fprintf(stderr, "  bad lines %lld, duplicates %lld\n", r->bad_lines, r->duplicates);
    if (!a->no_llm) {
        fprintf(stderr,
                "  cached %lld, asked %lld (%.1f/s): requests %lld, 429 %lld, 5xx %lld, "
                "network errors %lld, retries %lld\n",
                r->cached, r->asked, secs > 0 ? r->asked / secs : 0, (long long)r->llm.n.requests,
                (long long)r->llm.n.http_429, (long long)r->llm.n.http_5xx,
                (long long)r->llm.n.network_errors, (long long)r->llm.n.retries);
        ml_counts_print("unusable answers", &r->invalid);
    }
    if (a->vision_url)
        fprintf(stderr, "  captions: cached %lld, asked %lld, requests %lld\n", r->captions_cached,
                r->captions_asked, (long long)r->vision.n.requests);
    ml_counts_print("captions failed", &r->caption_dropped);
    ml_counts_print("pairs dropped", &r->dropped);
    if (!a->stats) return 0;
    json_t *s =
        json_pack("{sI sI sI sI sI sI so so so sf sf}", "pairs_in", (json_int_t)lines, "bad_lines",
                  (json_int_t)r->bad_lines, "duplicates", (json_int_t)r->duplicates, "cached",
                  (json_int_t)r->cached, "asked", (json_int_t)r->asked, "triplets_out",
                  (json_int_t)r->out, "dropped", ml_counts_json(&r->dropped), "unusable_answers",
                  ml_counts_json(&r->invalid), "llm", llm_json(&r->llm), "seconds", secs,
                  "instructions_per_s", secs > 0 ? r->asked / secs : 0.0);
    if (!s) return ml_fail(err, "out of memory");
    json_object_set_new(s, "complete", json_boolean(ok));
    json_object_set_new(s, "source", json_string(a->no_llm ? "template" : "llm"));
    if (a->vision_url)
        json_object_set_new(s, "captions",
                            json_pack("{sI sI so so}", "cached", (json_int_t)r->captions_cached,
                                      "asked", (json_int_t)r->captions_asked, "dropped",
                                      ml_counts_json(&r->caption_dropped), "llm",
                                      llm_json(&r->vision)));
    char *text = json_dumps(s, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    int rc =
        text ? ml_write_atomic(a->stats, text, strlen(text), err) : ml_fail(err, "out of memory");
    free(text);
    json_decref(s);
    return rc;
}

/* ---- main --------------------------------------------------------------- */

/* --prompt, else $MAGICLENS_PROMPTS/instruct.txt, else prompts/instruct.txt
 * next to the binary's repository (BIN/../prompts, BIN/../../prompts,
 * BIN/../share/magiclens/prompts), else ./prompts/instruct.txt. */
static int load_prompt(ml_prompt *p, const char *given, ml_error *err) {
    if (given) return ml_prompt_load(p, given, err);
    char path[4096];
    const char *env = getenv("MAGICLENS_PROMPTS");
    if (env && *env) {
        snprintf(path, sizeof path, "%s/instruct.txt", env);
        return ml_prompt_load(p, path, err);
    }
    char exe[4000];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        static const char *const rel[] = {"/../prompts", "/../../prompts",
                                          "/../share/magiclens/prompts"};
        for (int i = 0; i < 3; i++) {
            snprintf(path, sizeof path, "%s%s/instruct.txt", exe, rel[i]);
            if (access(path, R_OK) == 0) return ml_prompt_load(p, path, err);
        }
    }
    if (access("prompts/instruct.txt", R_OK) == 0)
        return ml_prompt_load(p, "prompts/instruct.txt", err);
    return ml_fail(err, "prompts/instruct.txt not found (next to the binary or in the current "
                        "folder): give --prompt FILE or set MAGICLENS_PROMPTS");
}

static int setup_llm(run *r, ml_error *err) {
    const args *a = r->a;
    const char *key = a->api_key_env ? getenv(a->api_key_env) : NULL;
    ml_llm *cs[2] = {&r->llm, &r->vision};
    const char *urls[2] = {a->llm_url, a->vision_url}, *models[2] = {a->llm_model, a->vision_model};
    for (int i = 0; i < 2; i++) {
        if (!urls[i]) continue;
        if (ml_llm_init(cs[i], urls[i], models[i], key, err)) return -1;
        cs[i]->temperature = i ? 0 : a->temperature; /* captions: the likeliest description */
        cs[i]->max_tokens = i ? 120 : a->max_tokens;
        cs[i]->retries = a->retries;
        cs[i]->backoff = a->backoff;
        cs[i]->max_backoff = a->max_backoff;
        cs[i]->timeout_s = (long)a->timeout;
        cs[i]->stop = &r->stop;
    }
    return 0;
}

static int run_all(run *r, ml_error *err) {
    const args *a = r->a;
    char *pairs_dir = ml_dir_of(a->pairs), *out_dir = ml_dir_of(a->output), *cache_path = NULL;
    int rc = pairs_dir && out_dir ? 0 : ml_fail(err, "out of memory");
    double t0 = ml_now();
    if (rc == 0) rc = read_pairs(r, pairs_dir, out_dir, err);
    if (rc == 0 && a->no_llm) {
        templates(r);
    } else if (rc == 0) {
        size_t cn = strlen(a->output) + 16;
        cache_path = a->cache ? strdup(a->cache) : malloc(cn);
        if (cache_path && !a->cache) snprintf(cache_path, cn, "%s.cache.jsonl", a->output);
        rc = cache_path ? 0 : ml_fail(err, "out of memory");
        if (rc == 0) rc = load_prompt(&r->prompt, a->prompt, err);
        if (rc == 0) rc = setup_llm(r, err);
        if (rc == 0) rc = ml_cache_open(&r->cache, cache_path, err);
        if (rc == 0 && r->cache.bad_lines)
            warnf(r, "%s: %ld unreadable lines ignored", cache_path, r->cache.bad_lines);
        if (rc == 0 && a->vision_url) rc = captions(r, err);
        if (rc == 0) rc = instructions(r, err);
        /* an endpoint that never answers is a wrong URL or a dead server,
         * not N failed pairs */
        if (rc == 0 && r->asked > 0 && r->llm.n.answers == 0 && r->llm.n.network_errors > 0)
            rc = ml_fail(err, "%s: no answer to any of %lld requests (network errors)",
                         r->llm.endpoint, (long long)r->llm.n.requests);
    }
    if (rc == 0) count_drops(r);
    if (rc == 0) rc = write_output(r, out_dir, err);
    double secs = ml_now() - t0;
    ml_error e2 = {{0}};
    if (report(r, secs, rc == 0, &e2) && rc == 0) {
        rc = -1;
        *err = e2;
    }
    free(pairs_dir), free(out_dir), free(cache_path);
    return rc;
}
int ml_mine_instruct(const ml_instruct_opts *a, ml_error *err) {
    curl_global_init(CURL_GLOBAL_DEFAULT); /* before any thread */
    run r = {.a = a};
    pthread_mutex_init(&r.mu, NULL);
    int rc = run_all(&r, err);
    for (size_t i = 0; i < r.n; i++) item_free(&r.items[i]);
    free(r.items);
    free_jobs(&r);
    ml_cache_close(&r.cache);
    ml_prompt_free(&r.prompt);
    ml_llm_free(&r.llm);
    ml_llm_free(&r.vision);
    ml_counts_free(&r.dropped);
    ml_counts_free(&r.invalid);
    ml_counts_free(&r.caption_dropped);
    pthread_mutex_destroy(&r.mu);
    curl_global_cleanup();
    return rc;
}
