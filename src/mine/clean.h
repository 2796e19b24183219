/* clean.h - the image cleaning rules of `mine pages` and the URL set behind
 * duplicate removal (docs/mining.md lists the rules and their defaults).
 *
 * A rules file is a JSON object with any of the keys below; a key that is
 * given replaces the default (lists are replaced, not extended), an unknown
 * key is an error (a typo must not silently keep the default). */
#ifndef ML_MINE_CLEAN_H
#define ML_MINE_CLEAN_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"
#include "mine/html.h"
#include "mine/url.h"

typedef struct ml_strlist {
    char **v;
    size_t n;
} ml_strlist;

typedef struct ml_clean_rules {
    long min_images, max_images; /* kept pages have min..max images */
    long min_size;               /* declared width or height below: too_small */
    long pixel_max;              /* declared width or height at most: tracking_pixel */
    ml_strlist keywords;         /* word in path, class/id or alt: icon */
    ml_strlist ad_hosts;         /* "host" (and its subdomains) or "host/path-prefix": ad_host */
    ml_strlist pixel_paths;      /* substring of the lower-cased path: tracking_pixel */
    ml_strlist drop_extensions;  /* path ending (lower case): extension */
} ml_clean_rules;

int ml_clean_rules_default(ml_clean_rules *r, ml_error *err);
/* Defaults overlaid with the JSON object in `path`. */
int ml_clean_rules_load(ml_clean_rules *r, const char *path, ml_error *err);
void ml_clean_rules_free(ml_clean_rules *r);
/* The rules as a JSON text (malloc'ed), e.g. for --dump-rules. */
char *ml_clean_rules_dump(const ml_clean_rules *r);

/* Why the rules drop a resolved image, or NULL to keep it (the URL and
 * duplicate checks are the caller's). */
const char *ml_clean_image(const ml_clean_rules *r, const ml_url *u, const ml_html_image *img);

/* A set of URLs by 64-bit hash (XXH3): 8 bytes per URL; a false "seen" needs
 * a hash collision (about n^2 / 2^65 for n URLs). */
typedef struct ml_url_set {
    uint64_t *slots; /* 0 = empty */
    size_t mask, count;
} ml_url_set;

int ml_url_set_init(ml_url_set *s, ml_error *err);
void ml_url_set_free(ml_url_set *s);
/* Adds url: 1 if it was new, 0 if already there, -1 out of memory. */
int ml_url_set_add(ml_url_set *s, const char *url, ml_error *err);
void ml_url_set_clear(ml_url_set *s);

#endif
