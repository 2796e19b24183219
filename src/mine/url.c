/* url.c - URL resolution with libcurl's URL API (see url.h). */
#include "mine/url.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct ml_url_base {
    CURLU *h;
};

static const unsigned SET_FLAGS = CURLU_URLENCODE | CURLU_NON_SUPPORT_SCHEME;
#ifdef CURLU_PUNYCODE
#define GET_FLAGS CURLU_PUNYCODE /* international host names as xn--... */
#else
#define GET_FLAGS 0
#endif

/* A part as a malloc'ed string of printable ASCII, or NULL: absent, or with
 * bytes no valid URL has (curl passes a raw non-UTF-8 host through). */
static char *get_part(CURLU *h, CURLUPart part) {
    char *v = NULL, *s = NULL;
    if (curl_url_get(h, part, &v, GET_FLAGS) != CURLUE_OK || !v) {
        curl_free(v); /* curl 7.88 can fail a punycode conversion and still set v */
        return NULL;
    }
    int ok = 1;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f) ok = 0;
    if (ok) s = strdup(v);
    curl_free(v);
    return s;
}

/* An http(s) URL that prints as ASCII. */
static int usable(CURLU *h) {
    char *scheme = NULL, *url;
    int ok = curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
             (!strcasecmp(scheme, "http") || !strcasecmp(scheme, "https"));
    curl_free(scheme);
    if (ok && (url = get_part(h, CURLUPART_URL))) {
        free(url);
        return 1;
    }
    return 0;
}

/* Browsers strip ASCII whitespace at both ends and drop tab/CR/LF inside. */
static char *clean_ref(const char *ref) {
    while (*ref == ' ' || *ref == '\t' || *ref == '\n' || *ref == '\r' || *ref == '\f') ref++;
    size_t n = strlen(ref);
    while (n && strchr(" \t\n\r\f", ref[n - 1])) n--;
    char *s = malloc(n + 1), *d = s;
    if (!s) return NULL;
    for (size_t i = 0; i < n; i++)
        if (ref[i] != '\t' && ref[i] != '\n' && ref[i] != '\r') *d++ = ref[i];
    *d = 0;
    return s;
}

/* A base from `url` resolved against `from` (NULL: url is absolute). */
static ml_url_base *make_base(const ml_url_base *from, const char *url) {
    char *s = clean_ref(url);
    CURLU *h = from ? curl_url_dup(from->h) : curl_url();
    ml_url_base *b = NULL;
    if (s && h && *s && curl_url_set(h, CURLUPART_URL, s, SET_FLAGS) == CURLUE_OK && usable(h) &&
        (b = malloc(sizeof *b))) {
        b->h = h;
        h = NULL;
    }
    free(s);
    curl_url_cleanup(h);
    return b;
}

ml_url_base *ml_url_base_new(const char *url) { return url ? make_base(NULL, url) : NULL; }

ml_url_base *ml_url_base_resolve(const ml_url_base *page, const char *href) {
    return make_base(page, href);
}

char *ml_url_base_string(const ml_url_base *b) { return get_part(b->h, CURLUPART_URL); }

void ml_url_base_free(ml_url_base *b) {
    if (!b) return;
    curl_url_cleanup(b->h);
    free(b);
}

/* "scheme:" at the start of ref? */
static int has_scheme(const char *s, const char *scheme) {
    size_t n = strlen(scheme);
    return !strncasecmp(s, scheme, n) && s[n] == ':';
}

int ml_url_resolve(const ml_url_base *base, const char *ref, ml_url *out) {
    memset(out, 0, sizeof *out);
    if (!ref) return ML_URL_EMPTY;
    char *s = clean_ref(ref);
    if (!s) return ML_URL_BAD;
    int rc = ML_URL_OK;
    CURLU *h = NULL;
    char *scheme = NULL;
    if (!*s)
        rc = ML_URL_EMPTY;
    else if (has_scheme(s, "data"))
        rc = ML_URL_DATA;
    else if (!(h = curl_url_dup(base->h)) ||
             curl_url_set(h, CURLUPART_URL, s, SET_FLAGS) != CURLUE_OK ||
             curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
        rc = ML_URL_BAD;
    else if (strcasecmp(scheme, "http") && strcasecmp(scheme, "https"))
        rc = ML_URL_NOT_HTTP;
    curl_free(scheme);
    free(s);
    if (rc == ML_URL_OK) {
        curl_url_set(h, CURLUPART_FRAGMENT, NULL, 0);
        out->full = get_part(h, CURLUPART_URL);
        out->host = get_part(h, CURLUPART_HOST);
        out->path = get_part(h, CURLUPART_PATH);
        out->query = get_part(h, CURLUPART_QUERY);
        if (!out->full || !out->host || !out->path) {
            ml_url_free(out);
            rc = ML_URL_BAD;
        }
    }
    curl_url_cleanup(h);
    if (rc == ML_URL_OK)
        for (char *p = out->host; *p; p++) *p = (char)tolower((unsigned char)*p);
    return rc;
}

void ml_url_free(ml_url *u) {
    free(u->full);
    free(u->host);
    free(u->path);
    free(u->query);
    memset(u, 0, sizeof *u);
}
