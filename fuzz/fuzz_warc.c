/* fuzz_warc.c - libFuzzer target: `mine pages` on arbitrary bytes.
 *
 * The input goes twice through the stage's code: as a WARC/ARC file (the
 * record reader, gzip members, HTTP decoding, HTML extraction, URL
 * resolution, cleaning and the JSON of each kept page, read back through
 * fmemopen), and as an HTML document on its own (extraction and every
 * image reference resolved and judged by the rules).  Invariants checked:
 * every emitted page is valid UTF-8 JSON with absolute http(s) image URLs. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mine/clean.h"
#include "mine/html.h"
#include "mine/pages.h"
#include "mine/url.h"

static int check_page(void *ctx, json_t *page, ml_error *err) {
    (void)ctx, (void)err;
    char *s = json_dumps(page, JSON_COMPACT);
    if (!s) abort(); /* jansson refuses invalid UTF-8: the strings must be clean */
    json_t *images = json_object_get(page, "images");
    for (size_t i = 0; i < json_array_size(images); i++) {
        const char *u = json_string_value(json_object_get(json_array_get(images, i), "url"));
        if (!u || (strncmp(u, "http://", 7) && strncmp(u, "https://", 8))) abort();
    }
    free(s);
    return 0;
}

static const ml_clean_rules *rules_once(void) {
    static ml_clean_rules rules;
    static int ready;
    if (!ready) {
        ml_error err;
        if (ml_clean_rules_default(&rules, &err)) abort();
        rules.min_images = 0; /* emit every page: more JSON to check */
        ready = 1;
    }
    return &rules;
}

static void as_html(const uint8_t *data, size_t size) {
    ml_html_page pg;
    ml_error err;
    if (ml_html_extract((const char *)data, size, NULL, &pg, &err) != 0) return;
    ml_url_base *base = ml_url_base_new("http://fuzz.example/a/b.html");
    ml_url_base *doc = pg.base && base ? ml_url_base_resolve(base, pg.base) : NULL;
    for (size_t i = 0; base && i < pg.nimages; i++) {
        ml_url u;
        if (ml_url_resolve(doc ? doc : base, pg.images[i].ref, &u) == ML_URL_OK) {
            (void)ml_clean_image(rules_once(), &u, &pg.images[i]);
            ml_url_free(&u);
        }
    }
    ml_url_base_free(doc);
    ml_url_base_free(base);
    ml_html_page_free(&pg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ml_pages p;
    ml_error err;
    if (ml_pages_init(&p, rules_once(), &err)) abort();
    p.emit = check_page;
    FILE *f = size ? fmemopen((void *)data, size, "rb") : NULL;
    if (f) {
        ml_pages_file(&p, f, "fuzz.warc", &err);
        fclose(f);
    }
    ml_pages_free(&p);
    as_html(data, size);
    return 0;
}
