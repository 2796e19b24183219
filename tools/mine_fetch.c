/* mine_fetch.c - `magiclens mine fetch`: its options, and --list (the
 * samples of a shard as the reader API sees them); the stage itself is
 * ml_mine_fetch (src/mine/fetch_run.h, docs/mining-fetch.md).
 *
 *   magiclens mine fetch --pages pages.jsonl --output shards/ [options] */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cli.h"
#include "core/error.h"
#include "mine.h"
#include "mine/fetch_run.h"
#include "mine/shards.h"

typedef ml_mine_fetch_opts fetch_opts;

/* ---- options ------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: magiclens mine fetch --pages pages.jsonl --output shards/ [options]\n"
            "  --concurrency N      transfers at once (default 16)\n"
            "  --per-host N         transfers at once per host (default 2)\n"
            "  --rate R             starts per second per host (default: no limit)\n"
            "  --timeout S          seconds per attempt, everything included (default 30)\n"
            "  --retries N          retries after timeouts, connection errors, 408, 429, 5xx\n"
            "                       (default 2; back-off 1 s, 2 s, ... or Retry-After <= 30 s)\n"
            "  --backoff S          first back-off in seconds (default 1)\n"
            "  --max-bytes B        largest image accepted (default 20000000)\n"
            "  --max-pixels P       largest decoded image (default 40000000)\n"
            "  --min-side PX        drop images whose shorter side is below (default 128)\n"
            "  --max-aspect R       drop images with long/short side above (default 3)\n"
            "  --phash-distance D   near duplicate: pHash Hamming distance <= D (default 6)\n"
            "  --dedup run|page|none  duplicates searched in the whole run (default), the\n"
            "                       page only, or not at all\n"
            "  --shard-size N       samples per shard, whole groups (default 1000)\n"
            "  --window N           pages in flight (default 256)\n"
            "  --stats FILE         counts as JSON\n"
            "  --verbose            one line per dropped image on stderr\n"
            "  --quiet              no progress bar\n"
            "  --list DIR|TAR       print the samples of shards (one JSON line each) and exit\n");
}

static int num(const char *name, const char *v, double lo, double hi, double *out) {
    return cli_number("mine fetch", name, v, lo, hi, out);
}

/* 0 ok, 1 help shown, 2 usage error. */
static int parse(int argc, char **argv, fetch_opts *o) {
    enum {
        O_CONC = 256,
        O_HOST,
        O_RATE,
        O_TIMEOUT,
        O_RETRIES,
        O_BACKOFF,
        O_BYTES,
        O_PIXELS,
        O_SIDE,
        O_ASPECT,
        O_DIST,
        O_DEDUP,
        O_SHARD,
        O_WINDOW,
        O_STATS,
        O_VERBOSE,
        O_LIST
    };
    static const struct option lo[] = {{"pages", required_argument, 0, 'p'},
                                       {"output", required_argument, 0, 'o'},
                                       {"concurrency", required_argument, 0, O_CONC},
                                       {"per-host", required_argument, 0, O_HOST},
                                       {"rate", required_argument, 0, O_RATE},
                                       {"timeout", required_argument, 0, O_TIMEOUT},
                                       {"retries", required_argument, 0, O_RETRIES},
                                       {"backoff", required_argument, 0, O_BACKOFF},
                                       {"max-bytes", required_argument, 0, O_BYTES},
                                       {"max-pixels", required_argument, 0, O_PIXELS},
                                       {"min-side", required_argument, 0, O_SIDE},
                                       {"max-aspect", required_argument, 0, O_ASPECT},
                                       {"phash-distance", required_argument, 0, O_DIST},
                                       {"dedup", required_argument, 0, O_DEDUP},
                                       {"shard-size", required_argument, 0, O_SHARD},
                                       {"window", required_argument, 0, O_WINDOW},
                                       {"stats", required_argument, 0, O_STATS},
                                       {"verbose", no_argument, 0, O_VERBOSE},
                                       {"list", required_argument, 0, O_LIST},
                                       {"quiet", no_argument, 0, 'q'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    ml_fetch_opts_default(&o->net);
    o->min_side = 128, o->max_aspect = 3, o->phash_distance = 6, o->dedup = ML_DEDUP_RUN;
    o->shard_size = 1000, o->window = 256, o->max_pixels = 40000000;
    int c;
    double x;
    optind = 1;
    while ((c = getopt_long(argc, argv, "p:o:qh", lo, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'p':
            o->pages = optarg;
            break;
        case 'o':
            o->output = optarg;
            break;
        case O_CONC:
            bad = num("--concurrency", optarg, 1, 4096, &x), o->net.concurrency = (int)x;
            break;
        case O_HOST:
            bad = num("--per-host", optarg, 1, 1024, &x), o->net.per_host = (int)x;
            break;
        case O_RATE:
            bad = num("--rate", optarg, 0, 1e6, &o->net.rate);
            break;
        case O_TIMEOUT:
            bad = num("--timeout", optarg, 0.1, 86400, &o->net.timeout);
            o->net.low_speed_time = fmin(o->net.low_speed_time, o->net.timeout);
            break;
        case O_RETRIES:
            bad = num("--retries", optarg, 0, 100, &x), o->net.retries = (int)x;
            break;
        case O_BACKOFF:
            bad = num("--backoff", optarg, 0, 3600, &o->net.backoff);
            break;
        case O_BYTES:
            bad = num("--max-bytes", optarg, 1, 1e12, &x), o->net.max_bytes = (long long)x;
            break;
        case O_PIXELS:
            bad = num("--max-pixels", optarg, 1, 1e10, &x), o->max_pixels = (long long)x;
            break;
        case O_SIDE:
            bad = num("--min-side", optarg, 0, 1e6, &x), o->min_side = (int)x;
            break;
        case O_ASPECT:
            bad = num("--max-aspect", optarg, 1, 1e6, &o->max_aspect);
            break;
        case O_DIST:
            bad = num("--phash-distance", optarg, 0, 31, &x), o->phash_distance = (int)x;
            break;
        case O_DEDUP:
            o->dedup = !strcmp(optarg, "run")    ? ML_DEDUP_RUN
                       : !strcmp(optarg, "page") ? ML_DEDUP_PAGE
                       : !strcmp(optarg, "none") ? ML_DEDUP_NONE
                                                 : -1;
            if (o->dedup < 0) fprintf(stderr, "magiclens mine fetch: --dedup run|page|none\n");
            bad = o->dedup < 0;
            break;
        case O_SHARD:
            bad = num("--shard-size", optarg, 1, 1e9, &x), o->shard_size = (int)x;
            break;
        case O_WINDOW:
            bad = num("--window", optarg, 1, 1e6, &x), o->window = (int)x;
            break;
        case O_STATS:
            o->stats = optarg;
            break;
        case O_VERBOSE:
            o->verbose = 1;
            break;
        case O_LIST:
            o->list = optarg;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
        if (bad) return 2;
    }
    if (optind < argc || (!o->list && (!o->pages || !o->output))) {
        fprintf(stderr, "magiclens mine fetch: --pages and --output are required%s\n",
                optind < argc ? " (and nothing else)" : "");
        usage(stderr);
        return 2;
    }
    return 0;
}
/* --list: the samples as the reader API sees them (also a test of it). */
static int list_shards(const char *path, ml_error *err) {
    ml_shard_reader *rd = ml_shard_reader_open(path, err);
    if (!rd) return -1;
    ml_shard_sample s;
    int rc;
    while ((rc = ml_shard_reader_next(rd, &s, err)) == 1) {
        XXH128_hash_t x = XXH3_128bits(s.data, s.len);
        char xx[33];
        snprintf(xx, sizeof xx, "%016llx%016llx", (unsigned long long)x.high64,
                 (unsigned long long)x.low64);
        json_t *j = json_pack("{ss ss ss sI sI si ss so}", "shard", s.shard, "key", s.key, "ext",
                              s.ext, "bytes", (json_int_t)s.len, "group", (json_int_t)s.group,
                              "index", s.index, "xxh3_128", xx, "meta", json_incref(s.meta));
        char *t = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(j);
        if (!t) {
            rc = ml_fail(err, "out of memory");
            break;
        }
        puts(t);
        free(t);
    }
    ml_shard_reader_close(rd);
    if (fflush(stdout) != 0) rc = ml_fail(err, "stdout: %s", strerror(errno));
    return rc < 0 ? -1 : 0;
}
int mine_fetch_main(int argc, char **argv) {
    fetch_opts o = {0};
    int prc = parse(argc, argv, &o);
    if (prc) return prc == 1 ? 0 : 2;
    if (o.list) {
        ml_error lerr = {{0}};
        if (list_shards(o.list, &lerr) == 0) return 0;
        fprintf(stderr, "magiclens mine fetch: %s\n", lerr.msg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN); /* a server closing early must not kill the run */
    ml_error err = {{0}};
    int rc = ml_mine_fetch(&o, &err);
    if (rc) fprintf(stderr, "magiclens mine fetch: %s\n", err.msg);
    return rc ? 1 : 0;
}
