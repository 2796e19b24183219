/* url.h - URL resolution for page extraction, on libcurl's URL API.
 *
 * A reference from an HTML attribute is cleaned the way browsers do (ASCII
 * whitespace at the ends dropped, tabs and newlines inside removed), then
 * resolved against the page's base URL by curl_url_set(); spaces and
 * non-ASCII bytes are percent-encoded, the fragment is dropped. */
#ifndef ML_MINE_URL_H
#define ML_MINE_URL_H

typedef struct ml_url_base ml_url_base;

/* An absolute http(s) URL to resolve against; NULL if it is not one. */
ml_url_base *ml_url_base_new(const char *url);
/* A base for `href` resolved against `page` (<base href>): NULL if unusable. */
ml_url_base *ml_url_base_resolve(const ml_url_base *page, const char *href);
void ml_url_base_free(ml_url_base *b);
/* The base as an absolute URL string (malloc'ed), NULL if out of memory. */
char *ml_url_base_string(const ml_url_base *b);

enum { ML_URL_OK = 0, ML_URL_EMPTY, ML_URL_DATA, ML_URL_NOT_HTTP, ML_URL_BAD };

/* A resolved URL and the parts the cleaning rules look at (all malloc'ed). */
typedef struct ml_url {
    char *full;  /* absolute URL without fragment */
    char *host;  /* lower case */
    char *path;  /* path without query, as in the URL (percent-encoded) */
    char *query; /* NULL if none */
} ml_url;

/* Resolves `ref`: ML_URL_OK (and *out filled) or why not. */
int ml_url_resolve(const ml_url_base *base, const char *ref, ml_url *out);
void ml_url_free(ml_url *u);

#endif
