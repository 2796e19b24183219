/* mine_instruct.c - `magiclens mine instruct`: its options; the stage itself
 * is ml_mine_instruct (src/mine/instruct_run.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "mine.h"
#include "mine/instruct_run.h"

#define ME "magiclens mine instruct"
#define MAX_THREADS ML_INSTRUCT_MAX_THREADS

typedef ml_instruct_opts args;

/* ---- options ------------------------------------------------------------ */

static void usage(FILE *f) {
    fprintf(f,
            "usage: magiclens mine instruct --pairs pairs.jsonl --output triplets.jsonl\n"
            "           (--llm-url URL --llm-model NAME | --no-llm) [options]\n"
            "  --pairs FILE          pairs.jsonl from `mine pairs`\n"
            "  --output FILE         triplets.jsonl (FILE.tmp, renamed at the end)\n"
            "  --llm-url URL         OpenAI-compatible endpoint (.../v1 or .../chat/completions)\n"
            "  --llm-model NAME      model name sent in each request\n"
            "  --api-key-env VAR     send 'Authorization: Bearer $VAR' (default OPENAI_API_KEY;\n"
            "                        no header when the variable is unset)\n"
            "  --prompt FILE         few-shot prompt (default prompts/instruct.txt, see docs)\n"
            "  --cache FILE          answer cache and journal (default OUTPUT.cache.jsonl)\n"
            "  --concurrency N       requests in flight (default 4)\n"
            "  --retries N           retries after 429/5xx/network errors (default 5)\n"
            "  --invalid-retries N   new tries after an unusable answer (default 2)\n"
            "  --backoff S           first retry wait, doubled each time (default 1)\n"
            "  --max-backoff S       cap on one wait, Retry-After included (default 60)\n"
            "  --timeout S           per request (default 120)\n"
            "  --temperature T       (default 0.7)   --max-tokens N (default 200)\n"
            "  --min-words N         (default 3)     --max-words N (default 25)\n"
            "  --min-ascii X         share of ASCII letters, 0 = no language check (default 0.9)\n"
            "  --vision-url URL      caption each image with a vision endpoint first\n"
            "  --vision-model NAME   its model name\n"
            "  --no-llm              template instructions, no endpoint (ablation)\n"
            "  --stats FILE          counts as JSON (also summarised on stderr)\n"
            "  --quiet               no progress bar\n");
}

static int num(const char *name, const char *v, double lo, double hi, double *out) {
    return cli_number("mine instruct", name, v, lo, hi, out);
}

static int parse(int argc, char **argv, args *a) {
    enum {
        O_PAIRS = 256,
        O_URL,
        O_MODEL,
        O_KEYENV,
        O_PROMPT,
        O_CACHE,
        O_CONC,
        O_RETRIES,
        O_INVALID,
        O_BACKOFF,
        O_MAXBACK,
        O_TIMEOUT,
        O_TEMP,
        O_TOKENS,
        O_MINW,
        O_MAXW,
        O_ASCII,
        O_VURL,
        O_VMODEL,
        O_NOLLM,
        O_STATS
    };
    static const struct option lo[] = {{"pairs", required_argument, 0, O_PAIRS},
                                       {"output", required_argument, 0, 'o'},
                                       {"llm-url", required_argument, 0, O_URL},
                                       {"llm-model", required_argument, 0, O_MODEL},
                                       {"api-key-env", required_argument, 0, O_KEYENV},
                                       {"prompt", required_argument, 0, O_PROMPT},
                                       {"cache", required_argument, 0, O_CACHE},
                                       {"concurrency", required_argument, 0, O_CONC},
                                       {"retries", required_argument, 0, O_RETRIES},
                                       {"invalid-retries", required_argument, 0, O_INVALID},
                                       {"backoff", required_argument, 0, O_BACKOFF},
                                       {"max-backoff", required_argument, 0, O_MAXBACK},
                                       {"timeout", required_argument, 0, O_TIMEOUT},
                                       {"temperature", required_argument, 0, O_TEMP},
                                       {"max-tokens", required_argument, 0, O_TOKENS},
                                       {"min-words", required_argument, 0, O_MINW},
                                       {"max-words", required_argument, 0, O_MAXW},
                                       {"min-ascii", required_argument, 0, O_ASCII},
                                       {"vision-url", required_argument, 0, O_VURL},
                                       {"vision-model", required_argument, 0, O_VMODEL},
                                       {"no-llm", no_argument, 0, O_NOLLM},
                                       {"stats", required_argument, 0, O_STATS},
                                       {"quiet", no_argument, 0, 'q'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    a->api_key_env = "OPENAI_API_KEY";
    a->concurrency = 4, a->retries = 5, a->invalid_retries = 2, a->max_tokens = 200;
    a->temperature = 0.7, a->backoff = 1, a->max_backoff = 60, a->timeout = 120;
    a->check = (ml_check_opts){3, 25, 0.9};
    int c;
    double x;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:qh", lo, NULL)) != -1) {
        switch (c) {
        case O_PAIRS:
            a->pairs = optarg;
            break;
        case 'o':
            a->output = optarg;
            break;
        case O_URL:
            a->llm_url = optarg;
            break;
        case O_MODEL:
            a->llm_model = optarg;
            break;
        case O_KEYENV:
            a->api_key_env = optarg;
            break;
        case O_PROMPT:
            a->prompt = optarg;
            break;
        case O_CACHE:
            a->cache = optarg;
            break;
        case O_CONC:
            if (num("--concurrency", optarg, 1, MAX_THREADS, &x)) return 2;
            a->concurrency = (int)x;
            break;
        case O_RETRIES:
            if (num("--retries", optarg, 0, 100, &x)) return 2;
            a->retries = (int)x;
            break;
        case O_INVALID:
            if (num("--invalid-retries", optarg, 0, 100, &x)) return 2;
            a->invalid_retries = (int)x;
            break;
        case O_BACKOFF:
            if (num("--backoff", optarg, 0, 3600, &a->backoff)) return 2;
            break;
        case O_MAXBACK:
            if (num("--max-backoff", optarg, 0, 86400, &a->max_backoff)) return 2;
            break;
        case O_TIMEOUT:
            if (num("--timeout", optarg, 1, 86400, &a->timeout)) return 2;
            break;
        case O_TEMP:
            if (num("--temperature", optarg, 0, 2, &a->temperature)) return 2;
            break;
        case O_TOKENS:
            if (num("--max-tokens", optarg, 1, 1e6, &x)) return 2;
            a->max_tokens = (int)x;
            break;
        case O_MINW:
            if (num("--min-words", optarg, 0, 1e4, &x)) return 2;
            a->check.min_words = (int)x;
            break;
        case O_MAXW:
            if (num("--max-words", optarg, 1, 1e4, &x)) return 2;
            a->check.max_words = (int)x;
            break;
        case O_ASCII:
            if (num("--min-ascii", optarg, 0, 1, &a->check.min_ascii)) return 2;
            break;
        case O_VURL:
            a->vision_url = optarg;
            break;
        case O_VMODEL:
            a->vision_model = optarg;
            break;
        case O_NOLLM:
            a->no_llm = 1;
            break;
        case O_STATS:
            a->stats = optarg;
            break;
        case 'q':
            a->quiet = 1;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    const char *bad = optind < argc             ? "unexpected argument"
                      : !a->pairs || !a->output ? "--pairs and --output are required"
                      : !a->no_llm && (!a->llm_url || !a->llm_model)
                          ? "--llm-url and --llm-model are required (or --no-llm)"
                      : !a->vision_url != !a->vision_model ? "--vision-url needs --vision-model"
                      : a->check.min_words > a->check.max_words ? "--min-words is above --max-words"
                                                                : NULL;
    if (bad) {
        fprintf(stderr, ME ": %s%s%s\n", bad, optind < argc ? " " : "",
                optind < argc ? argv[optind] : "");
        usage(stderr);
        return 2;
    }
    return 0;
}

int mine_instruct_main(int argc, char **argv) {
    args a = {0};
    int prc = parse(argc, argv, &a);
    if (prc) return prc == 1 ? 0 : 2;
    ml_error err = {{0}};
    int rc = ml_mine_instruct(&a, &err);
    if (rc != 0) fprintf(stderr, ME ": %s\n", err.msg);
    return rc == 0 ? 0 : 1;
}
