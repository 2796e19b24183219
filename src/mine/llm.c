/* llm.c - OpenAI-compatible chat client (see llm.h). */
#include "mine/llm.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/error.h"

#define MAX_ANSWER_BYTES (16u << 20)

int ml_llm_init(ml_llm *c, const char *url, const char *model, const char *api_key, ml_error *err) {
    memset(c, 0, sizeof *c);
    static const char suffix[] = "/chat/completions";
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/') n--;
    int has = n >= sizeof suffix - 1 &&
              !strncmp(url + n - (sizeof suffix - 1), suffix, sizeof suffix - 1);
    size_t cap = n + sizeof suffix;
    c->endpoint = malloc(cap);
    c->model = strdup(model);
    if (api_key && *api_key) {
        size_t an = strlen(api_key) + 32;
        if ((c->auth = malloc(an))) snprintf(c->auth, an, "Authorization: Bearer %s", api_key);
    }
    if (!c->endpoint || !c->model || (api_key && *api_key && !c->auth)) {
        ml_llm_free(c);
        return ml_fail(err, "out of memory");
    }
    snprintf(c->endpoint, cap, "%.*s%s", (int)n, url, has ? "" : suffix);
    c->temperature = 0.7;
    c->max_tokens = 200;
    c->retries = 5;
    c->backoff = 1.0;
    c->max_backoff = 60.0;
    c->timeout_s = 120;
    return 0;
}

void ml_llm_free(ml_llm *c) {
    free(c->endpoint), free(c->model), free(c->auth);
    c->endpoint = c->model = c->auth = NULL;
}

typedef struct reply {
    char *body;
    size_t n, cap;
    int too_large;
    double retry_after; /* < 0: none */
} reply;

static size_t on_body(char *p, size_t size, size_t nmemb, void *ctx) {
    reply *r = ctx;
    size_t k = size * nmemb;
    if (r->n + k + 1 > MAX_ANSWER_BYTES) {
        r->too_large = 1;
        return 0;
    }
    if (r->n + k + 1 > r->cap) {
        size_t nc = (r->n + k + 1) * 2;
        char *b = realloc(r->body, nc);
        if (!b) return 0;
        r->body = b, r->cap = nc;
    }
    memcpy(r->body + r->n, p, k);
    r->n += k;
    r->body[r->n] = 0;
    return k;
}

/* Retry-After: delay-seconds or an HTTP date. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ctx) {
    reply *r = ctx;
    size_t k = size * nmemb;
    static const char name[] = "retry-after:";
    if (k > sizeof name - 1 && !strncasecmp(p, name, sizeof name - 1)) {
        char v[128];
        size_t a = sizeof name - 1, b = k;
        while (a < b && isspace((unsigned char)p[a])) a++;
        while (b > a && isspace((unsigned char)p[b - 1])) b--;
        if (b - a < sizeof v) {
            memcpy(v, p + a, b - a);
            v[b - a] = 0;
            char *end;
            double s = strtod(v, &end);
            if (end != v && !*end && s >= 0) {
                r->retry_after = s;
            } else {
                time_t t = curl_getdate(v, NULL);
                if (t != -1) r->retry_after = fmax(0, difftime(t, time(NULL)));
            }
        }
    }
    return k;
}

/* The answer text, or NULL when the body is not a chat completion. */
static char *answer_text(const char *body) {
    json_t *o = json_loads(body, 0, NULL);
    json_t *msg = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message");
    json_t *content = json_object_get(msg, "content");
    char *s = json_is_string(content) ? strdup(json_string_value(content)) : NULL;
    json_decref(o);
    return s;
}

static void wait_s(ml_llm *c, double s) {
    while (s > 0 && !(c->stop && atomic_load(c->stop))) {
        double step = s > 0.05 ? 0.05 : s;
        struct timespec ts = {(time_t)step, (long)((step - (time_t)step) * 1e9)};
        nanosleep(&ts, NULL);
        s -= step;
    }
}

static void snippet(char *out, size_t cap, const char *body) {
    size_t i = 0;
    for (; body && body[i] && i + 1 < cap && i < 160; i++)
        out[i] = body[i] == '\n' || body[i] == '\r' ? ' ' : body[i];
    out[i] = 0;
}

int ml_llm_chat(ml_llm *c, CURL *h, json_t *messages, char **content, ml_error *err) {
    *content = NULL;
    json_t *req = json_object();
    json_object_set_new(req, "model", json_string(c->model));
    json_object_set(req, "messages", messages);
    json_object_set_new(req, "temperature", json_real(c->temperature));
    json_object_set_new(req, "max_tokens", json_integer(c->max_tokens));
    char *text = json_dumps(req, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(req);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    /* no "Expect: 100-continue" round trip before each body */
    if (hdr) hdr = curl_slist_append(hdr, "Expect:");
    if (hdr && c->auth) hdr = curl_slist_append(hdr, c->auth);
    if (!text || !hdr) {
        free(text), curl_slist_free_all(hdr);
        return ml_fail(err, "out of memory");
    }
    int rc = ML_LLM_FAILED;
    char why[256] = "";
    for (int attempt = 0;; attempt++) {
        reply r = {.retry_after = -1};
        curl_easy_reset(h);
        curl_easy_setopt(h, CURLOPT_URL, c->endpoint);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, c->timeout_s);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
        atomic_fetch_add(&c->n.requests, 1);
        CURLcode cr = curl_easy_perform(h);
        long status = 0;
        int retry = 1;
        if (cr != CURLE_OK) {
            atomic_fetch_add(&c->n.network_errors, 1);
            snprintf(why, sizeof why, "%s%s", r.too_large ? "answer over 16 MiB: " : "",
                     curl_easy_strerror(cr));
        } else {
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
            char snip[161];
            snippet(snip, sizeof snip, r.body);
            if (status >= 200 && status < 300) {
                if ((*content = answer_text(r.body ? r.body : ""))) {
                    atomic_fetch_add(&c->n.answers, 1);
                    free(r.body);
                    rc = ML_LLM_OK;
                    break;
                }
                atomic_fetch_add(&c->n.bad_responses, 1);
                snprintf(why, sizeof why, "not a chat completion: %s", snip);
            } else if (status == 429) {
                atomic_fetch_add(&c->n.http_429, 1);
                snprintf(why, sizeof why, "http 429: %s", snip);
            } else if (status >= 500) {
                atomic_fetch_add(&c->n.http_5xx, 1);
                snprintf(why, sizeof why, "http %ld: %s", status, snip);
            } else {
                atomic_fetch_add(&c->n.http_4xx, 1);
                snprintf(why, sizeof why, "http %ld: %s", status, snip);
                retry = 0;
                if (status == 401 || status == 403 || status == 404) rc = ML_LLM_FATAL;
            }
        }
        free(r.body);
        if (!retry || attempt >= c->retries || (c->stop && atomic_load(c->stop))) {
            if (retry) {
                size_t l = strlen(why);
                snprintf(why + l, sizeof why - l, " (after %d attempts)", attempt + 1);
            }
            break;
        }
        double w = c->backoff * pow(2, attempt);
        if (r.retry_after >= 0) w = r.retry_after;
        atomic_fetch_add(&c->n.retries, 1);
        wait_s(c, fmin(w, c->max_backoff));
    }
    free(text);
    curl_slist_free_all(hdr);
    if (rc != ML_LLM_OK) ml_fail(err, "%s: %s", c->endpoint, why);
    return rc;
}

static const char *sniff_mime(const unsigned char *d, size_t n) {
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8) return "image/jpeg";
    if (n >= 8 && !memcmp(d, "\x89PNG", 4)) return "image/png";
    if (n >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WEBP", 4)) return "image/webp";
    if (n >= 4 && !memcmp(d, "GIF8", 4)) return "image/gif";
    return "application/octet-stream";
}

char *ml_llm_data_url(const unsigned char *data, size_t len) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *mime = sniff_mime(data, len);
    size_t head = strlen(mime) + 14, n = head + (len + 2) / 3 * 4 + 1;
    char *s = malloc(n);
    if (!s) return NULL;
    char *o = s + snprintf(s, n, "data:%s;base64,", mime);
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)data[i] << 16;
        if (i + 1 < len) v |= (unsigned)data[i + 1] << 8;
        if (i + 2 < len) v |= data[i + 2];
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = i + 1 < len ? b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? b64[v & 63] : '=';
    }
    *o = 0;
    return s;
}
