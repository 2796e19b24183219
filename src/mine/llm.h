/* llm.h - a client for OpenAI-compatible chat endpoints (libcurl + jansson).
 *
 * POST {url}/chat/completions (or the URL as given when it already ends in
 * /chat/completions) with {"model", "messages", "temperature",
 * "max_tokens"}; the answer is choices[0].message.content.  429 and 5xx
 * answers and network errors are retried with exponential backoff (base *
 * 2^attempt, capped), honouring Retry-After (seconds or an HTTP date); 401,
 * 403 and 404 are fatal (a wrong key or URL fails every request alike).
 *
 * One ml_llm is shared by all threads (its counters are atomic); each thread
 * passes its own CURL easy handle. */
#ifndef ML_MINE_LLM_H
#define ML_MINE_LLM_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdatomic.h>

#include "magiclens.h"

typedef struct ml_llm_counters {
    atomic_llong requests, answers, http_429, http_5xx, http_4xx, network_errors, bad_responses,
        retries;
} ml_llm_counters;

typedef struct ml_llm {
    char *endpoint; /* full URL of chat/completions (owned) */
    char *model;    /* owned */
    char *auth;     /* "Authorization: Bearer KEY" or NULL (owned) */
    double temperature;
    int max_tokens;
    int retries;        /* extra attempts after a 429 / 5xx / network error */
    double backoff;     /* seconds before the first retry */
    double max_backoff; /* cap on any one wait, Retry-After included */
    long timeout_s;     /* whole request */
    atomic_int *stop;   /* optional: nonzero makes waits end early */
    ml_llm_counters n;
} ml_llm;

/* api_key may be NULL (no Authorization header). */
int ml_llm_init(ml_llm *c, const char *url, const char *model, const char *api_key, ml_error *err);
void ml_llm_free(ml_llm *c);

enum { ML_LLM_OK = 0, ML_LLM_FAILED = -1, ML_LLM_FATAL = -2 };

/* Sends `messages` (a JSON array, borrowed); *content receives the answer
 * text (malloc'ed).  ML_LLM_FAILED: this request failed after the retries
 * (err says why: "http 500", "bad response", ...); ML_LLM_FATAL: no request
 * can succeed (401/403/404). */
int ml_llm_chat(ml_llm *c, CURL *h, json_t *messages, char **content, ml_error *err);

/* "data:MIME;base64,..." for image bytes (malloc'ed), mime from the bytes. */
char *ml_llm_data_url(const unsigned char *data, size_t len);

#endif
