/* cmd_train.c - `magiclens train`: options in, ml_train_run out.
 *
 *   magiclens train --init MODEL --data TRIPLETS --output DIR [options]
 *
 * Under `mpirun -n K` every rank runs this with the same options
 * (data-parallel; see src/train/trainer.c). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/dist.h"
#include "train/trainer.h"

static void train_usage(FILE *f) {
    fprintf(f, "usage: magiclens train --init MODEL --data TRIPLETS --output DIR "
               "[options]\n"
               "  --init MODEL          .pkl / .mlens MagicLens model, or a Hugging "
               "Face CLIP\n"
               "                        model.safetensors (then --init-fusion random)\n"
               "  --init-fusion random  fresh fusion layers (seeded by --seed)\n"
               "  --data PATH           triplets: JSONL, a WebDataset .tar or a folder "
               "of them\n"
               "  --output DIR          step_N.mlens/.state checkpoints, final.mlens, "
               "log.jsonl\n"
               "  --steps N (1000)      optimiser steps      --batch B (32)   global "
               "batch\n"
               "  --accum A (1)         micro-batches per step (gradient accumulation)\n"
               "  --lr LR (1e-4)        peak learning rate   --warmup N (5%% of steps)\n"
               "  --min-lr-ratio R (0)  cosine floor          --weight-decay W (0.05)\n"
               "  --beta1 (0.9) --beta2 (0.98) --eps (1e-6)   --clip-norm C (1.0; 0 = "
               "off)\n"
               "  --train fusion|all    what trains (fusion: towers frozen and cached)\n"
               "  --temperature T       fixed temperature (default: learned, "
               "clip/logit_scale)\n"
               "  --bf16                bf16 matrix products (fp32 master weights)\n"
               "  --seed S (0)          data order and random init\n"
               "  --workers W (2)       image decoding threads   --threads N compute "
               "threads\n"
               "  --no-cache            do not cache frozen tower outputs\n"
               "  --save-every N (500)  --keep K (2) step checkpoints kept (0 = all)\n"
               "  --resume              continue from the newest checkpoint in DIR\n"
               "  --eval FILE --eval-every N   held-out triplets: recall@1/5/10 in the "
               "log\n"
               "  --log-every N (1)     --quiet    --vocab V\n"
               "  --stop-after N        stop after N steps as if interrupted (for "
               "tests)\n");
}

enum {
    O_INIT = 256,
    O_INIT_FUSION,
    O_DATA,
    O_OUTPUT,
    O_STEPS,
    O_BATCH,
    O_ACCUM,
    O_LR,
    O_WARMUP,
    O_MINLR,
    O_WD,
    O_B1,
    O_B2,
    O_EPS,
    O_CLIP,
    O_TRAIN,
    O_TEMP,
    O_BF16,
    O_SEED,
    O_WORKERS,
    O_THREADS,
    O_NOCACHE,
    O_SAVE,
    O_KEEP,
    O_RESUME,
    O_EVAL,
    O_EVAL_EVERY,
    O_LOG_EVERY,
    O_QUIET,
    O_VOCAB,
    O_STOP,
    O_HELP
};

static const struct option train_long[] = {{"init", 1, 0, O_INIT},
                                           {"init-fusion", 1, 0, O_INIT_FUSION},
                                           {"data", 1, 0, O_DATA},
                                           {"output", 1, 0, O_OUTPUT},
                                           {"steps", 1, 0, O_STEPS},
                                           {"batch", 1, 0, O_BATCH},
                                           {"accum", 1, 0, O_ACCUM},
                                           {"lr", 1, 0, O_LR},
                                           {"warmup", 1, 0, O_WARMUP},
                                           {"min-lr-ratio", 1, 0, O_MINLR},
                                           {"weight-decay", 1, 0, O_WD},
                                           {"beta1", 1, 0, O_B1},
                                           {"beta2", 1, 0, O_B2},
                                           {"eps", 1, 0, O_EPS},
                                           {"clip-norm", 1, 0, O_CLIP},
                                           {"train", 1, 0, O_TRAIN},
                                           {"temperature", 1, 0, O_TEMP},
                                           {"bf16", 0, 0, O_BF16},
                                           {"seed", 1, 0, O_SEED},
                                           {"workers", 1, 0, O_WORKERS},
                                           {"threads", 1, 0, O_THREADS},
                                           {"no-cache", 0, 0, O_NOCACHE},
                                           {"save-every", 1, 0, O_SAVE},
                                           {"keep", 1, 0, O_KEEP},
                                           {"resume", 0, 0, O_RESUME},
                                           {"eval", 1, 0, O_EVAL},
                                           {"eval-every", 1, 0, O_EVAL_EVERY},
                                           {"log-every", 1, 0, O_LOG_EVERY},
                                           {"quiet", 0, 0, O_QUIET},
                                           {"vocab", 1, 0, O_VOCAB},
                                           {"stop-after", 1, 0, O_STOP},
                                           {"help", 0, 0, O_HELP},
                                           {0, 0, 0, 0}};

/* The options are named without their dashes in set_option. */
static int num(const char *opt, const char *s, double lo, double hi, double *out) {
    char name[64];
    snprintf(name, sizeof name, "--%s", opt);
    return cli_number("train", name, s, lo, hi, out);
}

static int set_option(ml_train_opts *o, int c, const char *a) {
    double v = 0;
    const double BIG = 9.0e15;
    switch (c) {
    case O_INIT:
        o->init = a;
        return 0;
    case O_INIT_FUSION:
        if (strcmp(a, "random") != 0) {
            fprintf(stderr, "magiclens train: --init-fusion takes 'random'\n");
            return -1;
        }
        o->init_fusion = a;
        return 0;
    case O_DATA:
        o->data = a;
        return 0;
    case O_OUTPUT:
        o->output = a;
        return 0;
    case O_STEPS:
        return num("steps", a, 1, BIG, &v) ? -1 : (o->steps = (int64_t)v, 0);
    case O_BATCH:
        return num("batch", a, 1, 1 << 20, &v) ? -1 : (o->batch = (int)v, 0);
    case O_ACCUM:
        return num("accum", a, 1, 1 << 20, &v) ? -1 : (o->accum = (int)v, 0);
    case O_LR:
        return num("lr", a, 0, 10, &o->lr);
    case O_WARMUP:
        return num("warmup", a, 0, BIG, &v) ? -1 : (o->warmup = (int64_t)v, 0);
    case O_MINLR:
        return num("min-lr-ratio", a, 0, 1, &o->min_lr_ratio);
    case O_WD:
        return num("weight-decay", a, 0, 10, &o->weight_decay);
    case O_B1:
        return num("beta1", a, 0, 0.999999, &o->beta1);
    case O_B2:
        return num("beta2", a, 0, 0.999999999, &o->beta2);
    case O_EPS:
        return num("eps", a, 0, 1, &o->eps);
    case O_CLIP:
        return num("clip-norm", a, 0, 1e9, &o->clip_norm);
    case O_TRAIN:
        if (strcmp(a, "fusion") && strcmp(a, "all")) {
            fprintf(stderr, "magiclens train: --train takes fusion or all\n");
            return -1;
        }
        o->train_towers = !strcmp(a, "all");
        return 0;
    case O_TEMP:
        return num("temperature", a, 0.01, 10, &o->temperature);
    case O_BF16:
        o->bf16 = 1;
        return 0;
    case O_SEED:
        return num("seed", a, 0, BIG, &v) ? -1 : (o->seed = (uint64_t)v, 0);
    case O_WORKERS:
        return num("workers", a, 1, 64, &v) ? -1 : (o->workers = (int)v, 0);
    case O_THREADS:
        return num("threads", a, 0, 1024, &v) ? -1 : (ml_set_threads((int)v), 0);
    case O_NOCACHE:
        o->cache_towers = 0;
        return 0;
    case O_SAVE:
        return num("save-every", a, 0, BIG, &v) ? -1 : (o->save_every = (int64_t)v, 0);
    case O_KEEP:
        return num("keep", a, 0, 1 << 20, &v) ? -1 : (o->keep = (int)v, 0);
    case O_RESUME:
        o->resume = 1;
        return 0;
    case O_EVAL:
        o->eval_data = a;
        return 0;
    case O_EVAL_EVERY:
        return num("eval-every", a, 0, BIG, &v) ? -1 : (o->eval_every = (int64_t)v, 0);
    case O_LOG_EVERY:
        return num("log-every", a, 0, BIG, &v) ? -1 : (o->log_every = (int64_t)v, 0);
    case O_QUIET:
        o->quiet = 1;
        return 0;
    case O_VOCAB:
        o->vocab = a;
        return 0;
    case O_STOP:
        return num("stop-after", a, 1, BIG, &v) ? -1 : (o->stop_after = (int64_t)v, 0);
    default:
        return -1;
    }
}

int cmd_train(int argc, char **argv) {
    ml_train_opts o;
    ml_train_opts_default(&o);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", train_long, NULL)) != -1) {
        if (c == O_HELP) {
            train_usage(stdout);
            return 0;
        }
        if (c == '?' || set_option(&o, c, optarg) != 0) return 2;
    }
    if (optind < argc || !o.init || !o.data || !o.output) {
        fprintf(stderr, "magiclens train: needs --init, --data and --output\n");
        train_usage(stderr);
        return 2;
    }
    if (o.eval_data && o.eval_every == 0) o.eval_every = o.save_every > 0 ? o.save_every : o.steps;
    ml_error err;
    if (ml_train_run(&o, &err) != 0) {
        fprintf(stderr, "magiclens train: %s\n", err.msg);
        return 1;
    }
    return 0;
}
