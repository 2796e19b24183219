/* cmd_eval.c - `magiclens eval BENCHMARK --data DIR --model M ...`: runs a
 * benchmark of the paper (src/eval/) and prints its metrics as a table, or
 * as JSON with --json.  Everything it writes goes under --output. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "eval/bench.h"
#include "eval/runner.h"

typedef struct eval_opts {
    const char *data, *model, *vocab, *split, *output;
    int k, batch, threads, precision, json, quiet;
} eval_opts;

static void eval_usage(FILE *f) {
    fprintf(f, "usage: magiclens eval BENCHMARK --data DIR --model M [--split val|test]\n"
               "       [--output DIR] [--k 50] [--json] [--precision P] [--batch N]\n"
               "       [--threads N] [--vocab V] [--quiet]\n"
               "BENCHMARK: %s\n"
               "See docs/eval.md for the layout expected under --data.\n",
            ml_eval_bench_names());
}

static int parse(int argc, char **argv, eval_opts *o) {
    static const struct option lo[] = {
        {"data", required_argument, 0, 'd'},   {"model", required_argument, 0, 'm'},
        {"vocab", required_argument, 0, 'v'},  {"split", required_argument, 0, 's'},
        {"output", required_argument, 0, 'o'}, {"k", required_argument, 0, 'k'},
        {"batch", required_argument, 0, 'b'},  {"threads", required_argument, 0, 'j'},
        {"precision", required_argument, 0, 'p'}, {"json", no_argument, 0, 'J'},
        {"quiet", no_argument, 0, 'q'},        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->k = 50, o->batch = 32, o->precision = ML_PRECISION_AUTO;
    int c;
    while ((c = getopt_long(argc, argv, "k:", lo, NULL)) != -1) {
        switch (c) {
        case 'd': o->data = optarg; break;
        case 'm': o->model = optarg; break;
        case 'v': o->vocab = optarg; break;
        case 's': o->split = optarg; break;
        case 'o': o->output = optarg; break;
        case 'k': o->k = atoi(optarg); break;
        case 'b': o->batch = atoi(optarg); break;
        case 'j': o->threads = atoi(optarg); break;
        case 'p':
            if (strcmp(optarg, "auto") == 0) o->precision = ML_PRECISION_AUTO;
            else if ((o->precision = cli_parse_precision(optarg)) < 0) return -1;
            break;
        case 'J': o->json = 1; break;
        case 'q': o->quiet = 1; break;
        case 'h': eval_usage(stdout); exit(0);
        default: eval_usage(stderr); return -1;
        }
    }
    if (o->k < 1 || o->k > 100000 || o->batch < 1 || o->batch > 4096) {
        fprintf(stderr, "magiclens eval: --k must be 1..100000 and --batch 1..4096\n");
        return -1;
    }
    return 0;
}

static void print_table(json_t *res) {
    json_t *tasks = json_object_get(res, "tasks"), *t, *v;
    size_t i;
    const char *k;
    printf("%s (%s)\n", json_string_value(json_object_get(res, "benchmark")),
           json_string_value(json_object_get(res, "split")));
    json_array_foreach(tasks, i, t) {
        printf("  %-16s queries %lld, scored %lld, unscored %lld (counted as misses); "
               "gallery %lld, missing %lld\n",
               json_string_value(json_object_get(t, "task")),
               json_integer_value(json_object_get(t, "queries")),
               json_integer_value(json_object_get(t, "scored")),
               json_integer_value(json_object_get(t, "unscored")),
               json_integer_value(json_object_get(t, "gallery")),
               json_integer_value(json_object_get(t, "gallery_missing")));
        json_t *pr;
        size_t j;
        json_array_foreach(json_object_get(t, "problems"), j, pr)
            if (j < 3) printf("    unscored: query %s: %s\n",
                              json_string_value(json_object_get(pr, "query")),
                              json_string_value(json_object_get(pr, "problem")));
        json_t *m = json_object_get(t, "metrics");
        if (!m) continue;
        printf("   ");
        json_object_foreach(m, k, v) printf(" %10s", k);
        printf("\n   ");
        json_object_foreach(m, k, v) printf(" %10.2f", json_real_value(v));
        printf("\n");
    }
    json_t *avg = json_object_get(res, "average");
    if (avg) {
        printf("  average\n   ");
        json_object_foreach(avg, k, v) printf(" %10s", k);
        printf("\n   ");
        json_object_foreach(avg, k, v) printf(" %10.2f", json_real_value(v));
        printf("\n");
    }
    json_array_foreach(json_object_get(res, "submission"), i, v)
        printf("  submission file: %s\n", json_string_value(v));
    printf("  rankings: %s\n", json_string_value(json_object_get(res, "rankings")));
}

int cmd_eval(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
            eval_usage(stdout);
            return 0;
        }
        eval_usage(stderr);
        return 2;
    }
    const char *bench = argv[1];
    argv[1] = argv[0];
    eval_opts o;
    if (parse(argc - 1, argv + 1, &o) != 0) return 2;
    if (!o.data || !o.model) {
        fprintf(stderr, "magiclens eval: --data DIR and --model M are required\n");
        return 2;
    }
    char outbuf[512];
    if (!o.output) {
        snprintf(outbuf, sizeof outbuf, "eval-%s-%s", bench, o.split ? o.split : "val");
        o.output = outbuf;
    }
    ml_error err;
    ml_eval_bench b;
    if (ml_eval_load(bench, o.split, o.data, o.output, &b, &err) != 0) {
        fprintf(stderr, "magiclens eval %s: %s\n", bench, err.msg);
        return 1;
    }
    if (o.threads > 0) ml_set_threads(o.threads);
    ml_model *m = cli_load_model(o.model, o.vocab, o.precision);
    if (!m) {
        ml_eval_bench_free(&b);
        return 1;
    }
    int progress = !o.quiet;
    ml_eval_opts eo = {o.output, o.k, o.batch, progress, o.model,
                       ml_precision_choice_name(ml_model_precision(m))};
    json_t *res = NULL;
    int rc = ml_eval_run(m, &b, &eo, &res, &err);
    ml_model_free(m);
    ml_eval_bench_free(&b);
    if (rc != 0) {
        fprintf(stderr, "magiclens eval %s: %s\n", bench, err.msg);
        return 1;
    }
    json_object_set_new(res, "model", json_string(o.model));
    if (o.json) {
        json_dumpf(res, stdout, JSON_INDENT(1));
        putchar('\n');
    } else {
        print_table(res);
    }
    json_decref(res);
    return 0;
}
