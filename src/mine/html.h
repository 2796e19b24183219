/* html.h - what a web page says about its images, from libxml2's HTML parser.
 *
 * Extraction only: references are returned as written (resolution and the
 * cleaning rules are url.c and clean.c).  Text values are whitespace-collapsed
 * (runs of ASCII whitespace become one space, ends trimmed), valid UTF-8,
 * at most ML_HTML_MAX_TEXT code points, and NULL when missing or empty. */
#ifndef ML_MINE_HTML_H
#define ML_MINE_HTML_H

#include <stddef.h>

#include "magiclens.h"

#define ML_HTML_MAX_TEXT 1000   /* code points kept of a title, alt, caption */
#define ML_HTML_CONTEXT 100     /* code points of text kept on each side of an image */
#define ML_HTML_MAX_IMAGES 5000 /* <img> elements looked at per page */

typedef struct ml_html_image {
    char *ref; /* chosen reference: largest srcset candidate, else data-src..., else src */
    char *alt, *title;
    char *caption;      /* the enclosing <figure>'s <figcaption> */
    char *context;      /* text around the image in its nearest block with text */
    char *class_id;     /* class and id attributes joined by a space (for keyword rules) */
    long width, height; /* declared integer sizes, -1 if absent or not an integer */
} ml_html_image;

typedef struct ml_html_page {
    char *title, *lang;
    char *base; /* href of the first <base href>, as written */
    ml_html_image *images;
    size_t nimages, cap;
    int more_images; /* more than ML_HTML_MAX_IMAGES <img> elements */
} ml_html_page;

/* Silences libxml2's own error printing (once per thread, before parsing). */
void ml_html_init(void);

/* Parses len bytes of HTML.  encoding: a charset name libxml2 knows (from
 * the HTTP header) or NULL to let libxml2 detect it (BOM, <meta charset>).
 * -1 only when libxml2 gives no document at all. */
int ml_html_extract(const char *html, size_t len, const char *encoding, ml_html_page *out,
                    ml_error *err);
void ml_html_page_free(ml_html_page *p);

/* Collapses whitespace and trims into a new string; NULL if empty. At most
 * max_cp code points (invalid UTF-8 becomes U+FFFD). Shared with pages.c. */
char *ml_html_clean_text(const char *s, size_t n, size_t max_cp);

#endif
