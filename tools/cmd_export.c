/* cmd_export.c - `magiclens export --model`: a model written out as a Flax
 * checkpoint (.pkl) or a .mlens, optionally with freshly initialised fusion
 * layers (docs/training-init.md): its options; the work is ml_export_model
 * (src/train/export_model.h).  `export --index` is in cmd_index.c. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "io/vocab.h"
#include "train/export_flax.h" /* ML_FLAX_MAX_CHUNK */
#include "train/export_model.h"

typedef struct mx_opts {
    const char *model, *format, *output, *init, *vocab;
    uint64_t seed, chunk;
    int quiet;
} mx_opts;

static int mx_parse(int argc, char **argv, mx_opts *o) {
    enum { O_FORMAT = 256, O_INIT, O_SEED, O_CHUNK };
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},      {"output", required_argument, 0, 'o'},
        {"format", required_argument, 0, O_FORMAT}, {"init-fusion", required_argument, 0, O_INIT},
        {"seed", required_argument, 0, O_SEED},    {"vocab", required_argument, 0, 'v'},
        {"chunk-bytes", required_argument, 0, O_CHUNK}, {"quiet", no_argument, 0, 'q'},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->format = "flax", o->chunk = ML_FLAX_MAX_CHUNK;
    int c;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:o:v:q", lo, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'o': o->output = optarg; break;
        case 'v': o->vocab = optarg; break;
        case 'q': o->quiet = 1; break;
        case O_FORMAT: o->format = optarg; break;
        case O_INIT: o->init = optarg; break;
        case O_SEED:
        case O_CHUNK:
            errno = 0;
            uint64_t v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-') {
                fprintf(stderr, "magiclens: %s %s: expected a non-negative integer\n",
                        c == O_SEED ? "--seed" : "--chunk-bytes", optarg);
                return -1;
            }
            if (c == O_SEED) o->seed = v;
            else o->chunk = v;
            break;
        default: return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "magiclens: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (strcmp(o->format, "flax") && strcmp(o->format, "mlens")) {
        fprintf(stderr, "magiclens: --format must be flax or mlens\n");
        return -1;
    }
    return cli_need(o->model, "--model") || cli_need(o->output, "--output") ? -1 : 0;
}

/* magiclens export --model M.pkl|M.mlens|M.safetensors --format flax|mlens --output OUT */
int cmd_export_model(int argc, char **argv) {
    mx_opts o;
    if (mx_parse(argc, argv, &o) != 0) return 2;
    ml_error err;
    char vbuf[4096];
    const char *vp = ml_vocab_find(o.vocab, vbuf, sizeof vbuf) == 0 ? vbuf : NULL;
    int mlens = !strcmp(o.format, "mlens");
    ml_export_model_opts eo = {o.model, o.init, o.seed, o.format, o.output, mlens ? vp : NULL,
                               o.chunk};
    size_t count;
    int rc = ml_export_model(&eo, &count, &err);
    if (rc == 0 && mlens && !vp && !o.quiet)
        fprintf(stderr, "magiclens: note: no vocabulary found (%s), none stored in %s\n",
                ML_VOCAB_ORDER, o.output);
    if (rc != 0) fprintf(stderr, "magiclens: %s\n", err.msg);
    else if (!o.quiet)
        fprintf(stderr, "magiclens: wrote %s (%s, %zu tensors)\n", o.output, o.format, count);
    return rc == 0 ? 0 : 1;
}
