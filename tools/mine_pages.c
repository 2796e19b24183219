/* mine_pages.c - `magiclens mine pages`: WARC/ARC files -> pages.jsonl, one
 * page and its cleaned image group per line (docs/mining.md, "pages").
 *
 *   magiclens mine pages --warc FILE.warc[.gz]... --output pages.jsonl
 *                        [--min-images K] [--max-images N] [--rules FILE]
 *                        [--stats FILE] [--quiet] [--dump-rules]
 *
 * This file parses the options and the rules; the stage itself is
 * ml_mine_pages (src/mine/pages_run.h). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "mine.h"
#include "mine/pages_run.h"

#define MAX_INPUTS 100000

typedef ml_mine_pages_opts pages_opts;

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
        rc = ml_mine_pages(&o, &rules, &err);
    }
    if (rc != 0) fprintf(stderr, "magiclens mine pages: %s\n", err.msg);
    ml_clean_rules_free(&rules); /* safe after a failed load too */
    free(o.warc);
    return rc == 0 ? 0 : 1;
}
