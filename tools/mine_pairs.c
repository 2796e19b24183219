/* mine_pairs.c - `magiclens mine pairs`: shards -> pairs.jsonl, the scored
 * image pairs inside each page (docs/mining-pairs.md, src/mine/pairs.h).
 *
 *   magiclens mine pairs --shards shards/ --model M --output pairs.jsonl
 *       [--min-sim 0.5] [--max-sim 0.92] [--max-pairs-per-page 4]
 *       [--max-uses 2] [--alt-weight 0.3] [--both-directions]
 *       [--batch 16] [--threads N] [--precision P] [--vocab V]
 *       [--stats FILE] [--quiet]
 *
 * This file parses the options and loads the model; the stage itself is
 * ml_mine_pairs (src/mine/pairs_run.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mine.h"
#include "mine/pairs_run.h"

typedef ml_mine_pairs_opts pairs_args;

static void usage(FILE *f) {
    fprintf(f, "usage: magiclens mine pairs --shards DIR --model M --output pairs.jsonl [options]\n"
               "  --shards DIR|TAR         folder of *.tar shards from `mine fetch` (name order)\n"
               "  --model M                MagicLens model (.pkl or .mlens): CLIP towers\n"
               "  --output FILE            pairs.jsonl (written as FILE.tmp, renamed at the end)\n"
               "  --min-sim X              drop pairs with image similarity below (default 0.5)\n"
               "  --max-sim X              drop near duplicates above (default 0.92)\n"
               "  --alt-weight W           score = (1-W)*image_sim + W*text_sim (default 0.3)\n"
               "  --max-pairs-per-page K   at most K pairs per page (default 4)\n"
               "  --max-uses U             one image in at most U pairs (default 2)\n"
               "  --both-directions        also write each pair with query and target swapped\n"
               "  --batch N                images per image-tower call (default 16)\n"
               "  --threads N              compute threads (default: all cores)\n"
               "  --precision P            fp32|bf16|int8|auto (default auto)\n"
               "  --vocab FILE             CLIP BPE vocabulary (default $MAGICLENS_VOCAB)\n"
               "  --stats FILE             counts as JSON (also summarised on stderr)\n"
               "  --quiet                  no progress bar\n");
}

static int num(const char *name, const char *v, double lo, double hi, double *out) {
    return cli_number("mine pairs", name, v, lo, hi, out);
}

/* 0 ok, 1 help, 2 usage error. */
static int parse(int argc, char **argv, pairs_args *a) {
    enum {
        O_MIN = 256,
        O_MAX,
        O_ALT,
        O_PPP,
        O_USES,
        O_BOTH,
        O_BATCH,
        O_THREADS,
        O_PREC,
        O_VOCAB,
        O_STATS
    };
    static const struct option lo[] = {{"shards", required_argument, 0, 's'},
                                       {"model", required_argument, 0, 'm'},
                                       {"output", required_argument, 0, 'o'},
                                       {"min-sim", required_argument, 0, O_MIN},
                                       {"max-sim", required_argument, 0, O_MAX},
                                       {"alt-weight", required_argument, 0, O_ALT},
                                       {"max-pairs-per-page", required_argument, 0, O_PPP},
                                       {"max-uses", required_argument, 0, O_USES},
                                       {"both-directions", no_argument, 0, O_BOTH},
                                       {"batch", required_argument, 0, O_BATCH},
                                       {"threads", required_argument, 0, O_THREADS},
                                       {"precision", required_argument, 0, O_PREC},
                                       {"vocab", required_argument, 0, O_VOCAB},
                                       {"stats", required_argument, 0, O_STATS},
                                       {"quiet", no_argument, 0, 'q'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    ml_pairs_opts_default(&a->o);
    a->precision = ML_PRECISION_AUTO;
    int c;
    double x;
    optind = 1;
    while ((c = getopt_long(argc, argv, "s:m:o:qh", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            a->shards = optarg;
            break;
        case 'm':
            a->model = optarg;
            break;
        case 'o':
            a->output = optarg;
            break;
        case O_MIN:
            if (num("--min-sim", optarg, -1, 1, &a->o.min_sim)) return 2;
            break;
        case O_MAX:
            if (num("--max-sim", optarg, -1, 1, &a->o.max_sim)) return 2;
            break;
        case O_ALT:
            if (num("--alt-weight", optarg, 0, 1, &a->o.alt_weight)) return 2;
            break;
        case O_PPP:
            if (num("--max-pairs-per-page", optarg, 1, 1e6, &x)) return 2;
            a->o.max_pairs_per_page = (int)x;
            break;
        case O_USES:
            if (num("--max-uses", optarg, 1, 1e6, &x)) return 2;
            a->o.max_uses = (int)x;
            break;
        case O_BOTH:
            a->o.both_directions = 1;
            break;
        case O_BATCH:
            if (num("--batch", optarg, 1, 256, &x)) return 2;
            a->o.batch = (int)x;
            break;
        case O_THREADS:
            if (num("--threads", optarg, 1, 1024, &x)) return 2;
            a->threads = (int)x;
            break;
        case O_PREC:
            if (!strcmp(optarg, "auto"))
                a->precision = ML_PRECISION_AUTO;
            else if ((a->precision = cli_parse_precision(optarg)) < 0)
                return 2;
            break;
        case O_VOCAB:
            a->vocab = optarg;
            break;
        case O_STATS:
            a->stats = optarg;
            break;
        case 'q':
            a->o.quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "magiclens mine pairs: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!a->shards || !a->model || !a->output) {
        fprintf(stderr, "magiclens mine pairs: --shards, --model and --output are required\n");
        usage(stderr);
        return 2;
    }
    if (a->o.min_sim > a->o.max_sim) {
        fprintf(stderr, "magiclens mine pairs: --min-sim %g is above --max-sim %g\n", a->o.min_sim,
                a->o.max_sim);
        return 2;
    }
    return 0;
}
int mine_pairs_main(int argc, char **argv) {
    pairs_args a = {0};
    int prc = parse(argc, argv, &a);
    if (prc) return prc == 1 ? 0 : 2;
    if (a.threads > 0) ml_set_threads(a.threads);
    ml_model *m = cli_load_model(a.model, a.vocab, a.precision);
    if (!m) return 1;
    ml_error err = {{0}};
    int rc = ml_mine_pairs(&a, m, &err);
    if (rc != 0) fprintf(stderr, "magiclens mine pairs: %s\n", err.msg);
    ml_model_free(m);
    return rc == 0 ? 0 : 1;
}
