/* mine_pages.c - `magiclens mine pages`: WARC/ARC files -> pages.jsonl, one
 * page and its cleaned image group per line (docs/mining.md, "pages").
 *
 *   magiclens mine pages --warc FILE.warc[.gz]... --output pages.jsonl
 *                        [--min-images K] [--max-images N] [--rules FILE]
 *                        [--stats FILE] [--quiet] [--dump-rules]
 *
 * One streaming pass; the output is written to OUT.tmp and renamed at the
 * end, so a killed run leaves no half file (and the old one intact). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/progress.h"
#include "mine.h"
#include "mine/pages.h"

#define MAX_INPUTS 100000
#define WARNINGS_SHOWN 20 /* per file; the rest are only counted */

typedef struct pages_opts {
    const char **warc;
    int nwarc;
    const char *output, *rules, *stats;
    long min_images, max_images; /* -1: from the rules */
    int quiet, dump_rules;
} pages_opts;

typedef struct run_state {
    ml_progress bar;
    long long file_base; /* bytes of the files before the current one */
    long file_warnings;
    FILE *out;
} run_state;

static void usage(FILE *f) {
    fprintf(f, "usage: magiclens mine pages --warc FILE.warc[.gz]... --output pages.jsonl\n"
               "  --warc FILE...     WARC (0.17-1.1) or ARC files, plain or gzip; more files may\n"
               "                     follow as plain arguments; read in the order given\n"
               "  --output FILE      pages.jsonl (written as FILE.tmp, renamed at the end)\n"
               "  --min-images K     keep pages with at least K images (default 2)\n"
               "  --max-images N     ... and at most N (default 50)\n"
               "  --rules FILE       JSON rules overriding the defaults (see --dump-rules)\n"
               "  --stats FILE       counts as JSON (also summarised on stderr)\n"
               "  --dump-rules       print the rules in effect as JSON and exit\n"
               "  --quiet            no progress bar\n");
}

static int parse_count(const char *name, const char *v, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < 0 || x > 1000000) {
        fprintf(stderr, "magiclens mine pages: %s %s: expected an integer in [0, 1000000]\n", name,
                v);
        return -1;
    }
    *out = x;
    return 0;
}

static int add_input(pages_opts *o, const char *path) {
    if (o->nwarc == MAX_INPUTS) {
        fprintf(stderr, "magiclens mine pages: more than %d input files\n", MAX_INPUTS);
        return -1;
    }
    o->warc[o->nwarc++] = path;
    return 0;
}

/* 0 ok, 1 exit 0 (help), 2 usage error. */
static int parse(int argc, char **argv, pages_opts *o) {
    enum { O_MIN = 256, O_MAX, O_RULES, O_STATS, O_DUMP };
    static const struct option lo[] = {{"warc", required_argument, 0, 'w'},
                                       {"output", required_argument, 0, 'o'},
                                       {"min-images", required_argument, 0, O_MIN},
                                       {"max-images", required_argument, 0, O_MAX},
                                       {"rules", required_argument, 0, O_RULES},
                                       {"stats", required_argument, 0, O_STATS},
                                       {"dump-rules", no_argument, 0, O_DUMP},
                                       {"quiet", no_argument, 0, 'q'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    o->min_images = o->max_images = -1;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "w:o:qh", lo, NULL)) != -1) {
        switch (c) {
        case 'w':
            if (add_input(o, optarg)) return 2;
            break;
        case 'o': o->output = optarg; break;
        case O_MIN:
            if (parse_count("--min-images", optarg, &o->min_images)) return 2;
            break;
        case O_MAX:
            if (parse_count("--max-images", optarg, &o->max_images)) return 2;
            break;
        case O_RULES: o->rules = optarg; break;
        case O_STATS: o->stats = optarg; break;
        case O_DUMP: o->dump_rules = 1; break;
        case 'q': o->quiet = 1; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return 2;
        }
    }
    for (int i = optind; i < argc; i++)
        if (add_input(o, argv[i])) return 2;
    if (o->dump_rules) return 0;
    if (!o->nwarc || !o->output) {
        fprintf(stderr, "magiclens mine pages: --warc and --output are required\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

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

static void print_counts(const char *label, const ml_counts *c) {
    if (!c->n) return;
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < c->n; i++)
        fprintf(stderr, "%s %s %lld", i ? "," : "", c->v[i].name, c->v[i].n);
    fputc('\n', stderr);
}

static void summary(const ml_pages *p, long long bytes, double secs) {
    double mb = bytes / 1e6;
    fprintf(stderr, "mine pages: %lld files, %.1f MB in %.2f s (%.1f MB/s, %.0f pages/s)\n",
            p->files, mb, secs, secs > 0 ? mb / secs : 0, secs > 0 ? p->html_pages / secs : 0);
    fprintf(stderr, "  records %lld, warnings %lld\n", p->records, p->warnings);
    print_counts("record types", &p->record_types);
    print_counts("records skipped", &p->skipped);
    fprintf(stderr, "  html pages %lld -> kept %lld\n", p->html_pages, p->pages_out);
    print_counts("pages dropped", &p->pages_dropped);
    fprintf(stderr, "  images %lld -> kept %lld\n", p->images_found, p->images_out);
    print_counts("images dropped", &p->images_dropped);
}

/* Writes OUT.tmp durably, then renames it over OUT. */
static int finish_output(FILE *f, const char *tmp, const char *out, ml_error *err) {
    int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    if (fclose(f) != 0 || bad) return ml_fail(err, "%s: write failed: %s", tmp, strerror(errno));
    if (rename(tmp, out) != 0) return ml_fail(err, "%s: rename failed: %s", out, strerror(errno));
    char *dir = strdup(out);
    if (!dir) return ml_fail(err, "out of memory");
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        slash[1] = 0;
    else
        *slash = 0;
    int rc = ml_fsync_dir(dir, err);
    free(dir);
    return rc;
}

static json_t *file_row(const char *name, long long size, const ml_pages *p, const ml_pages *b) {
    return json_pack("{ss sI sI sI sI sI sI}", "file", name, "bytes", (json_int_t)size, "records",
                     (json_int_t)(p->records - b->records), "html_pages",
                     (json_int_t)(p->html_pages - b->html_pages), "pages_out",
                     (json_int_t)(p->pages_out - b->pages_out), "images_out",
                     (json_int_t)(p->images_out - b->images_out), "warnings",
                     (json_int_t)(p->warnings - b->warnings));
}

static int run(const pages_opts *o, const ml_clean_rules *rules, ml_error *err) {
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
        rc = finish_output(st.out, tmp, o->output, err);
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

int mine_pages_main(int argc, char **argv) {
    pages_opts o = {0};
    o.warc = calloc(MAX_INPUTS, sizeof *o.warc);
    if (!o.warc) return 1;
    int prc = parse(argc, argv, &o);
    if (prc) {
        free(o.warc);
        return prc == 1 ? 0 : 2;
    }
    ml_error err = {{0}};
    ml_clean_rules rules;
    int rc = ml_clean_rules_default(&rules, &err);
    if (rc == 0 && o.rules) rc = ml_clean_rules_load(&rules, o.rules, &err);
    if (rc == 0) {
        if (o.min_images >= 0) rules.min_images = o.min_images;
        if (o.max_images >= 0) rules.max_images = o.max_images;
        if (rules.min_images > rules.max_images)
            rc = ml_fail(&err, "--min-images %ld is above --max-images %ld", rules.min_images,
                         rules.max_images);
    }
    if (rc == 0 && o.dump_rules) {
        char *s = ml_clean_rules_dump(&rules);
        if (s) puts(s);
        free(s);
    } else if (rc == 0) {
        rc = run(&o, &rules, &err);
    }
    if (rc != 0) fprintf(stderr, "magiclens mine pages: %s\n", err.msg);
    ml_clean_rules_free(&rules); /* safe after a failed load too */
    free(o.warc);
    return rc == 0 ? 0 : 1;
}
