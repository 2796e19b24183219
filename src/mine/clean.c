/* clean.c - image cleaning rules and the URL set (see clean.h). */
#include "mine/clean.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/error.h"

static const char *const DEF_KEYWORDS[] = {"logo",   "icon",    "sprite", "favicon", "avatar",
                                           "badge",  "button",  "spacer", "pixel",   "emoji",
                                           "smiley", "spinner", NULL};
static const char *const DEF_AD_HOSTS[] = {"doubleclick.net",
                                           "googlesyndication.com",
                                           "googleadservices.com",
                                           "google-analytics.com",
                                           "googletagmanager.com",
                                           "adservice.google.com",
                                           "amazon-adsystem.com",
                                           "adnxs.com",
                                           "scorecardresearch.com",
                                           "quantserve.com",
                                           "criteo.com",
                                           "criteo.net",
                                           "taboola.com",
                                           "outbrain.com",
                                           "pubmatic.com",
                                           "rubiconproject.com",
                                           "openx.net",
                                           "advertising.com",
                                           "moatads.com",
                                           "adsrvr.org",
                                           "yieldmanager.com",
                                           "2o7.net",
                                           "omtrdc.net",
                                           "imrworldwide.com",
                                           "statcounter.com",
                                           "sitemeter.com",
                                           "hitbox.com",
                                           "addthis.com",
                                           "sharethis.com",
                                           "bat.bing.com",
                                           "pixel.wp.com",
                                           "stats.wp.com",
                                           "feedburner.com",
                                           "connect.facebook.net",
                                           "facebook.com/tr",
                                           "facebook.com/plugins",
                                           "platform.twitter.com",
                                           "syndication.twitter.com",
                                           "analytics.twitter.com",
                                           "px.ads.linkedin.com",
                                           "linkedin.com/px",
                                           NULL};
static const char *const DEF_PIXEL_PATHS[] = {
    "/pixel", "1x1",     "/spacer.",        "/clear.gif", "/blank.gif", "__utm.gif",
    "/b/ss/", "/beacon", "transparent.gif", "matomo.php", "piwik.php",  NULL};
static const char *const DEF_EXTENSIONS[] = {".svg", ".gif", ".ico", NULL};

static void list_free(ml_strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL, l->n = 0;
}

static int list_from(ml_strlist *l, const char *const *v, ml_error *err) {
    size_t n = 0;
    while (v[n]) n++;
    l->v = calloc(n ? n : 1, sizeof *l->v);
    l->n = 0;
    if (!l->v) return ml_fail(err, "out of memory");
    for (; l->n < n; l->n++)
        if (!(l->v[l->n] = strdup(v[l->n]))) return ml_fail(err, "out of memory");
    return 0;
}

int ml_clean_rules_default(ml_clean_rules *r, ml_error *err) {
    memset(r, 0, sizeof *r);
    r->min_images = 2, r->max_images = 50, r->min_size = 100, r->pixel_max = 2;
    if (list_from(&r->keywords, DEF_KEYWORDS, err) || list_from(&r->ad_hosts, DEF_AD_HOSTS, err) ||
        list_from(&r->pixel_paths, DEF_PIXEL_PATHS, err) ||
        list_from(&r->drop_extensions, DEF_EXTENSIONS, err)) {
        ml_clean_rules_free(r);
        return -1;
    }
    return 0;
}

void ml_clean_rules_free(ml_clean_rules *r) {
    list_free(&r->keywords);
    list_free(&r->ad_hosts);
    list_free(&r->pixel_paths);
    list_free(&r->drop_extensions);
}

/* A JSON array of strings, stored lower-cased (all matching is on lower case). */
static int list_json(ml_strlist *l, json_t *a, const char *path, const char *key, ml_error *err) {
    if (!json_is_array(a)) return ml_fail(err, "%s: \"%s\" must be an array of strings", path, key);
    ml_strlist nl = {calloc(json_array_size(a) + 1, sizeof(char *)), 0};
    if (!nl.v) return ml_fail(err, "out of memory");
    for (size_t i = 0; i < json_array_size(a); i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s || !*s) {
            list_free(&nl);
            return ml_fail(err, "%s: \"%s\"[%zu] must be a non-empty string", path, key, i);
        }
        if (!(nl.v[nl.n] = strdup(s))) {
            list_free(&nl);
            return ml_fail(err, "out of memory");
        }
        for (char *p = nl.v[nl.n]; *p; p++) *p = (char)tolower((unsigned char)*p);
        nl.n++;
    }
    list_free(l);
    *l = nl;
    return 0;
}

static int num_json(long *dst, json_t *v, const char *path, const char *key, long lo,
                    ml_error *err) {
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > 1000000000)
        return ml_fail(err, "%s: \"%s\" must be an integer >= %ld", path, key, lo);
    *dst = (long)json_integer_value(v);
    return 0;
}

int ml_clean_rules_load(ml_clean_rules *r, const char *path, ml_error *err) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return ml_fail(err, "%s: line %d: %s", path, je.line, je.text);
    int rc = 0;
    if (!json_is_object(root)) rc = ml_fail(err, "%s: rules must be a JSON object", path);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (rc) break;
        if (!strcmp(key, "min_images"))
            rc = num_json(&r->min_images, v, path, key, 0, err);
        else if (!strcmp(key, "max_images"))
            rc = num_json(&r->max_images, v, path, key, 1, err);
        else if (!strcmp(key, "min_size"))
            rc = num_json(&r->min_size, v, path, key, 0, err);
        else if (!strcmp(key, "pixel_max"))
            rc = num_json(&r->pixel_max, v, path, key, 0, err);
        else if (!strcmp(key, "keywords"))
            rc = list_json(&r->keywords, v, path, key, err);
        else if (!strcmp(key, "ad_hosts"))
            rc = list_json(&r->ad_hosts, v, path, key, err);
        else if (!strcmp(key, "pixel_paths"))
            rc = list_json(&r->pixel_paths, v, path, key, err);
        else if (!strcmp(key, "drop_extensions"))
            rc = list_json(&r->drop_extensions, v, path, key, err);
        else
            rc = ml_fail(err, "%s: unknown rule \"%s\"", path, key);
    }
    json_decref(root);
    return rc;
}

static json_t *list_to_json(const ml_strlist *l) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < l->n; i++) json_array_append_new(a, json_string(l->v[i]));
    return a;
}

char *ml_clean_rules_dump(const ml_clean_rules *r) {
    json_t *o = json_pack("{sI sI sI sI so so so so}", "min_images", (json_int_t)r->min_images,
                          "max_images", (json_int_t)r->max_images, "min_size",
                          (json_int_t)r->min_size, "pixel_max", (json_int_t)r->pixel_max,
                          "keywords", list_to_json(&r->keywords), "ad_hosts",
                          list_to_json(&r->ad_hosts), "pixel_paths", list_to_json(&r->pixel_paths),
                          "drop_extensions", list_to_json(&r->drop_extensions));
    char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return s;
}

/* ---- matching -------------------------------------------------------- */

static char *lower_dup(const char *s) {
    char *d = strdup(s ? s : "");
    for (char *p = d; p && *p; p++) *p = (char)tolower((unsigned char)*p);
    return d;
}

/* host is `h` or a subdomain of it. */
static int host_match(const char *host, const char *h, size_t hn) {
    size_t n = strlen(host);
    if (n < hn || strncmp(host + n - hn, h, hn)) return 0;
    return n == hn || host[n - hn - 1] == '.';
}

static int ad_match(const ml_strlist *l, const char *host, const char *lpath) {
    for (size_t i = 0; i < l->n; i++) {
        const char *e = l->v[i], *slash = strchr(e, '/');
        size_t hn = slash ? (size_t)(slash - e) : strlen(e);
        if (host_match(host, e, hn) && (!slash || !strncmp(lpath, slash, strlen(slash)))) return 1;
    }
    return 0;
}

/* A keyword matches a word (a run of ASCII letters, lower-cased) that is
 * the keyword, its plural with "s", or ends with it ("sitelogo"). */
static int keyword_match(const ml_strlist *l, const char *text) {
    if (!text) return 0;
    const char *p = text;
    while (*p) {
        while (*p && !isalpha((unsigned char)*p)) p++;
        const char *w = p;
        while (isalpha((unsigned char)*p)) p++;
        size_t wn = (size_t)(p - w);
        if (!wn) continue;
        for (size_t i = 0; i < l->n; i++) {
            const char *k = l->v[i];
            size_t kn = strlen(k);
            if (wn < kn) continue;
            if (!strncasecmp(w + wn - kn, k, kn)) return 1;
            if (wn == kn + 1 && tolower((unsigned char)w[kn]) == 's' && !strncasecmp(w, k, kn))
                return 1;
        }
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

const char *ml_clean_image(const ml_clean_rules *r, const ml_url *u, const ml_html_image *img) {
    char *lpath = lower_dup(u->path);
    if (!lpath) return "out_of_memory";
    const char *why = NULL;
    int pixel_path = 0;
    for (size_t i = 0; i < r->pixel_paths.n && !pixel_path; i++)
        pixel_path = strstr(lpath, r->pixel_paths.v[i]) != NULL;
    int ext = 0;
    for (size_t i = 0; i < r->drop_extensions.n && !ext; i++)
        ext = ends_with(lpath, r->drop_extensions.v[i]);
    if (ad_match(&r->ad_hosts, u->host, lpath))
        why = "ad_host";
    else if ((img->width >= 0 && img->width <= r->pixel_max) ||
             (img->height >= 0 && img->height <= r->pixel_max) || pixel_path)
        why = "tracking_pixel";
    else if (keyword_match(&r->keywords, lpath) || keyword_match(&r->keywords, img->class_id) ||
             keyword_match(&r->keywords, img->alt))
        why = "icon";
    else if (ext)
        why = "extension";
    else if ((img->width >= 0 && img->width < r->min_size) ||
             (img->height >= 0 && img->height < r->min_size))
        why = "too_small";
    free(lpath);
    return why;
}

/* ---- URL set --------------------------------------------------------- */

int ml_url_set_init(ml_url_set *s, ml_error *err) {
    s->mask = 1023, s->count = 0;
    s->slots = calloc(s->mask + 1, sizeof *s->slots);
    return s->slots ? 0 : ml_fail(err, "out of memory");
}

void ml_url_set_free(ml_url_set *s) {
    free(s->slots);
    s->slots = NULL;
}

void ml_url_set_clear(ml_url_set *s) {
    memset(s->slots, 0, (s->mask + 1) * sizeof *s->slots);
    s->count = 0;
}

static void set_put(uint64_t *slots, size_t mask, uint64_t h) {
    size_t i = (size_t)h & mask;
    while (slots[i] && slots[i] != h) i = (i + 1) & mask;
    slots[i] = h;
}

int ml_url_set_add(ml_url_set *s, const char *url, ml_error *err) {
    uint64_t h = XXH3_64bits(url, strlen(url));
    if (!h) h = 1; /* 0 marks an empty slot */
    for (size_t i = (size_t)h & s->mask; s->slots[i]; i = (i + 1) & s->mask)
        if (s->slots[i] == h) return 0;
    if (2 * (s->count + 1) > s->mask + 1) { /* keep the load at most 1/2 */
        size_t nm = 2 * s->mask + 1;
        uint64_t *ns = calloc(nm + 1, sizeof *ns);
        if (!ns) return ml_fail(err, "out of memory (URL set of %zu entries)", s->count);
        for (size_t i = 0; i <= s->mask; i++)
            if (s->slots[i]) set_put(ns, nm, s->slots[i]);
        free(s->slots);
        s->slots = ns, s->mask = nm;
    }
    set_put(s->slots, s->mask, h);
    s->count++;
    return 1;
}
