/* pages_run.c - the `mine pages` stage: WARC/ARC files -> pages.jsonl in
 * one streaming pass, the output written to OUT.tmp and renamed at the end,
 * so a killed run leaves no half file (and the old one intact). */
#include "mine/pages_run.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "mine/pages.h"

#define WARNINGS_SHOWN 20 /* per file; the rest are only counted */

typedef struct run_state {
    ml_progress bar;
    long long file_base; /* bytes of the files before the current one */
    long file_warnings;
    FILE *out;
} run_state;
static void on_warning(void *ctx, const char *file, long long offset, const char *msg) {
    run_state *st = ctx;
    (void)offset; /* the message names it */
    if (++st->file_warnings <= WARNINGS_SHOWN)
        fprintf(stderr, "%smagiclens mine pages: warning: %s: %s\n", st->bar.tty ? "\n" : "", file,
                msg);
    else if (st->file_warnings == WARNINGS_SHOWN + 1)
        fprintf(stderr, "magiclens mine pages: warning: %s: more warnings (only counted)\n", file);
}

static void on_progress(void *ctx, long long bytes) {
    run_state *st = ctx;
    long long now = st->file_base + bytes;
    if (now > st->bar.done) ml_progress_add(&st->bar, (long)(now - st->bar.done));
}

static int on_page(void *ctx, json_t *page, ml_error *err) {
    run_state *st = ctx;
    if (json_dumpf(page, st->out, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 ||
        fputc('\n', st->out) == EOF)
        return ml_fail(err, "write failed: %s", strerror(errno));
    return 0;
}

static void summary(const ml_pages *p, long long bytes, double secs) {
    double mb = bytes / 1e6;
    fprintf(stderr, "mine pages: %lld files, %.1f MB in %.2f s (%.1f MB/s, %.0f pages/s)\n",
            p->files, mb, secs, secs > 0 ? mb / secs : 0, secs > 0 ? p->html_pages / secs : 0);
    fprintf(stderr, "  records %lld, warnings %lld\n", p->records, p->warnings);
    ml_counts_print("record types", &p->record_types);
    ml_counts_print("records skipped", &p->skipped);
    fprintf(stderr, "  html pages %lld -> kept %lld\n", p->html_pages, p->pages_out);
    ml_counts_print("pages dropped", &p->pages_dropped);
    fprintf(stderr, "  images %lld -> kept %lld\n", p->images_found, p->images_out);
    ml_counts_print("images dropped", &p->images_dropped);
}

static json_t *file_row(const char *name, long long size, const ml_pages *p, const ml_pages *b) {
    return json_pack("{ss sI sI sI sI sI sI}", "file", name, "bytes", (json_int_t)size, "records",
                     (json_int_t)(p->records - b->records), "html_pages",
                     (json_int_t)(p->html_pages - b->html_pages), "pages_out",
                     (json_int_t)(p->pages_out - b->pages_out), "images_out",
                     (json_int_t)(p->images_out - b->images_out), "warnings",
                     (json_int_t)(p->warnings - b->warnings));
}

int ml_mine_pages(const ml_mine_pages_opts *o, const ml_clean_rules *rules, ml_error *err) {
    long long total = 0, *sizes = calloc((size_t)o->nwarc, sizeof *sizes);
    if (!sizes) return ml_fail(err, "out of memory");
    for (int i = 0; i < o->nwarc; i++) { /* every input checked before any work */
        struct stat sb;
        const char *why = stat(o->warc[i], &sb) != 0 ? strerror(errno)
                          : S_ISDIR(sb.st_mode)      ? "is a folder"
                                                     : NULL;
        if (why) {
            free(sizes);
            return ml_fail(err, "%s: %s", o->warc[i], why);
        }
        /* a pipe (--warc <(zcat ...)) has no size: the bar just counts */
        sizes[i] = S_ISREG(sb.st_mode) ? sb.st_size : 0, total += sizes[i];
    }
    size_t tn = strlen(o->output) + 5;
    char *tmp = malloc(tn);
    run_state st = {0};
    ml_pages p;
    if (!tmp || ml_pages_init(&p, rules, err)) {
        free(tmp), free(sizes);
        return tmp ? -1 : ml_fail(err, "out of memory");
    }
    snprintf(tmp, tn, "%s.tmp", o->output);
    int rc = 0;
    if (!(st.out = fopen(tmp, "w")))
        rc = ml_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    p.emit = on_page, p.emit_ctx = &st;
    p.warn = on_warning, p.warn_ctx = &st;
    p.progress = on_progress, p.progress_ctx = &st;
    json_t *per_file = json_array();
    double t0 = ml_now();
    ml_progress_start(&st.bar, "mine pages (bytes)", (long)total, !o->quiet);
    for (int i = 0; i < o->nwarc && rc == 0; i++) {
        FILE *f = fopen(o->warc[i], "rb");
        if (!f) {
            rc = ml_fail(err, "%s: cannot open: %s", o->warc[i], strerror(errno));
            break;
        }
        ml_pages before = p;
        st.file_warnings = 0;
        rc = ml_pages_file(&p, f, o->warc[i], err);
        fclose(f);
        json_array_append_new(per_file, file_row(o->warc[i], sizes[i], &p, &before));
        st.file_base += sizes[i];
        on_progress(&st, 0);
    }
    ml_progress_finish(&st.bar);
    double secs = ml_now() - t0;
    if (rc == 0)
        rc = ml_finish_tmp(st.out, tmp, o->output, err);
    else if (st.out)
        fclose(st.out);
    if (rc != 0) unlink(tmp);
    summary(&p, total, secs);
    if (rc == 0 && o->stats) {
        json_t *s = ml_pages_stats(&p);
        json_object_set_new(s, "input_bytes", json_integer(total));
        json_object_set_new(s, "seconds", json_real(secs));
        json_object_set_new(s, "mb_per_s", json_real(secs > 0 ? total / 1e6 / secs : 0));
        json_object_set_new(s, "pages_per_s", json_real(secs > 0 ? p.html_pages / secs : 0));
        json_object_set(s, "per_file", per_file);
        char *text = json_dumps(s, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        rc = text ? ml_write_atomic(o->stats, text, strlen(text), err)
                  : ml_fail(err, "out of memory");
        free(text);
        json_decref(s);
    }
    json_decref(per_file);
    ml_pages_free(&p);
    free(tmp);
    free(sizes);
    return rc;
}
