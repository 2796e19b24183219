/* instruct_run.h - the `mine instruct` stage as a library call: pairs.jsonl
 * -> triplets.jsonl, the instruction of each pair written by an
 * OpenAI-compatible chat endpoint (on a pool of request threads, with
 * retries and an on-disk cache that is the run's journal) or by templates
 * (docs/mining-pairs.md).  instruct.h holds its parts: prompts, answer
 * checks, the cache. */
#ifndef ML_MINE_INSTRUCT_RUN_H
#define ML_MINE_INSTRUCT_RUN_H

#include "magiclens.h"
#include "mine/instruct.h"

#define ML_INSTRUCT_MAX_THREADS 256 /* most requests in flight (concurrency) */

typedef struct ml_instruct_opts {
    const char *pairs, *output, *llm_url, *llm_model, *api_key_env, *prompt, *cache, *vision_url,
        *vision_model, *stats;
    int concurrency, retries, invalid_retries, no_llm, quiet, max_tokens;
    double temperature, backoff, max_backoff, timeout;
    ml_check_opts check;
} ml_instruct_opts;

/* Runs the whole stage (the options as `magiclens mine instruct --help`
 * describes them; defaults are the CLI's).  Progress, warnings and the
 * summary go to stderr (quiet: no progress bar), the counts also to
 * o->stats.  Returns 0, or -1 with err set (the output is then not
 * written; what the cache holds stays for the next run). */
int ml_mine_instruct(const ml_instruct_opts *o, ml_error *err);

#endif
