/* html.c - page and image extraction on libxml2's HTML parser (see html.h).
 *
 * Context text: for each image, the nearest enclosing block element whose
 * text around the image is not empty; the last ML_HTML_CONTEXT code points
 * before the image and the first ML_HTML_CONTEXT after it, joined by a
 * space.  The walks that collect it stop after a fixed number of bytes and
 * nodes, so a page with thousands of images in one huge block stays linear. */
#include "mine/html.h"

#include <libxml/HTMLparser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <utf8proc.h>

#include "core/error.h"

#define WALK_BYTES (8 * ML_HTML_CONTEXT) /* collapsed bytes enough for the context */
#define WALK_NODES 4000                  /* nodes visited per side and level */

/* A growable string; on allocation failure it stops growing (oom set). */
typedef struct sbuf {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_putc(sbuf *b, char c) {
    if (b->oom) return;
    if (b->n + 1 >= b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 256;
        char *p = realloc(b->s, nc);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p, b->cap = nc;
    }
    b->s[b->n++] = c;
    b->s[b->n] = 0;
}

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

/* Appends with whitespace runs collapsed (a run becomes one space). */
static void sb_put_collapsed(sbuf *b, const char *s, size_t n, size_t limit) {
    for (size_t i = 0; i < n && b->n < limit; i++) {
        if (is_space((unsigned char)s[i])) {
            if (b->n == 0 || b->s[b->n - 1] != ' ') sb_putc(b, ' ');
        } else {
            sb_putc(b, s[i]);
        }
    }
}

/* The same, for the backward walk: bytes are pushed last-first. */
static void sb_put_collapsed_rev(sbuf *b, const char *s, size_t n, size_t limit) {
    for (size_t i = n; i > 0 && b->n < limit; i--) {
        if (is_space((unsigned char)s[i - 1])) {
            if (b->n == 0 || b->s[b->n - 1] != ' ') sb_putc(b, ' ');
        } else {
            sb_putc(b, s[i - 1]);
        }
    }
}

static void sb_space(sbuf *b) {
    if (b->n && b->s[b->n - 1] != ' ') sb_putc(b, ' ');
}

/* Valid UTF-8 with runs collapsed and ends trimmed; at most max_cp code
 * points counted from the start (from_end = 0) or the end (from_end = 1).
 * Returns NULL for an empty result. */
static char *clean_text(const char *s, size_t n, size_t max_cp, int from_end) {
    sbuf b = {0};
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)s;
    size_t i = 0;
    /* decode once into code point boundaries: collapse first, then cut */
    sbuf c = {0};
    while (i < n) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(p + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) {
            sb_putc(&c, (char)0xef), sb_putc(&c, (char)0xbf), sb_putc(&c, (char)0xbd);
            i++;
        } else if (cp < 128 && is_space((unsigned char)cp)) {
            if (c.n && c.s[c.n - 1] != ' ') sb_putc(&c, ' ');
            i += (size_t)k;
        } else {
            for (utf8proc_ssize_t j = 0; j < k; j++) sb_putc(&c, (char)p[i + (size_t)j]);
            i += (size_t)k;
        }
    }
    if (c.oom || !c.n) {
        free(c.s);
        return NULL;
    }
    /* trim, then keep max_cp code points from one end, then trim again */
    size_t a = 0, z = c.n;
    while (a < z && c.s[a] == ' ') a++;
    while (z > a && c.s[z - 1] == ' ') z--;
    size_t count = 0;
    if (!from_end) {
        size_t e = a;
        while (e < z && count < max_cp) {
            e++;
            while (e < z && ((unsigned char)c.s[e] & 0xc0) == 0x80) e++;
            count++;
        }
        z = e;
    } else {
        size_t st = z;
        while (st > a && count < max_cp) {
            st--;
            while (st > a && ((unsigned char)c.s[st] & 0xc0) == 0x80) st--;
            count++;
        }
        a = st;
    }
    while (a < z && c.s[a] == ' ') a++;
    while (z > a && c.s[z - 1] == ' ') z--;
    for (size_t k = a; k < z; k++) sb_putc(&b, c.s[k]);
    free(c.s);
    if (b.oom || !b.n) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

char *ml_html_clean_text(const char *s, size_t n, size_t max_cp) {
    return s ? clean_text(s, n, max_cp, 0) : NULL;
}

/* ---- the DOM --------------------------------------------------------- */

/* libxml2's HTML parser lower-cases element names: plain comparisons do. */
static int named(const xmlNode *n, const char *name) {
    return n && n->type == XML_ELEMENT_NODE && n->name && n->name[0] == (xmlChar)name[0] &&
           !strcmp((const char *)n->name, name);
}

/* Subtrees whose text is not page text. */
static int skip_text(const xmlNode *n) {
    return named(n, "script") || named(n, "style") || named(n, "noscript") || named(n, "template");
}

static int is_block(const xmlNode *n) {
    static const char *const blocks[] = {
        "address", "article", "aside", "blockquote", "caption",    "dd",     "details",
        "div",     "dl",      "dt",    "fieldset",   "figcaption", "figure", "footer",
        "form",    "h1",      "h2",    "h3",         "h4",         "h5",     "h6",
        "header",  "li",      "main",  "nav",        "ol",         "p",      "pre",
        "section", "summary", "table", "td",         "th",         "tr",     "ul"};
    if (!n || n->type != XML_ELEMENT_NODE || !n->name) return 0;
    for (size_t i = 0; i < sizeof blocks / sizeof *blocks; i++)
        if (n->name[0] == (xmlChar)blocks[i][0] && !strcmp((const char *)n->name, blocks[i]))
            return 1;
    return 0;
}

static int is_text(const xmlNode *n) {
    return n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE;
}

/* An attribute's value (malloc'ed by libxml2, xmlFree), NULL if absent. */
static char *attr(xmlNode *n, const char *name) {
    return (char *)xmlGetProp(n, (const xmlChar *)name);
}

static char *attr_text(xmlNode *n, const char *name) {
    char *v = attr(n, name);
    char *t = v ? clean_text(v, strlen(v), ML_HTML_MAX_TEXT, 0) : NULL;
    xmlFree(v);
    return t;
}

/* A declared size: ASCII digits only (whitespace around allowed), else -1. */
static long attr_int(xmlNode *n, const char *name) {
    char *v = attr(n, name);
    long x = -1;
    if (v) {
        const char *p = v;
        while (is_space((unsigned char)*p)) p++;
        size_t d = 0;
        while (p[d] >= '0' && p[d] <= '9') d++;
        const char *q = p + d;
        while (is_space((unsigned char)*q)) q++;
        if (d > 0 && d <= 9 && !*q) x = strtol(p, NULL, 10);
    }
    xmlFree(v);
    return x;
}

/* All text under n (skipping script/style), spaces at block edges. */
static void subtree_text(xmlNode *root, sbuf *b, size_t limit) {
    xmlNode *n = root->children;
    while (n && b->n < limit) {
        if (is_text(n) && n->content)
            sb_put_collapsed(b, (const char *)n->content, strlen((const char *)n->content), limit);
        else if (is_block(n) || named(n, "br"))
            sb_space(b);
        if (n->type == XML_ELEMENT_NODE && n->children && !skip_text(n)) {
            n = n->children;
            continue;
        }
        while (n && n != root && !n->next) {
            n = n->parent;
            if (n != root && is_block(n)) sb_space(b);
        }
        n = (n && n != root) ? n->next : NULL;
    }
}

/* The node after n in document order inside root (descend: into n's
 * children), adding a space when a block ends; NULL at root's end. */
static xmlNode *step_fwd(xmlNode *n, xmlNode *root, int descend, sbuf *b) {
    if (descend && n->type == XML_ELEMENT_NODE && n->children && !skip_text(n)) return n->children;
    for (;;) {
        if (n == root) return NULL;
        if (is_block(n)) sb_space(b);
        if (n->next) return n->next;
        n = n->parent;
        if (!n || n == root) return NULL;
    }
}

/* The node before n in document order inside root (deepest last child). */
static xmlNode *step_back(xmlNode *n, xmlNode *root, sbuf *rev) {
    while (!n->prev) {
        n = n->parent;
        if (!n || n == root) return NULL;
        if (is_block(n)) sb_space(rev);
    }
    n = n->prev;
    for (;;) {
        if (is_block(n) || named(n, "br")) sb_space(rev);
        if (n->type != XML_ELEMENT_NODE || !n->last || skip_text(n)) return n;
        n = n->last;
    }
}

static void text_after(xmlNode *img, xmlNode *root, sbuf *b) {
    int nodes = 0;
    for (xmlNode *n = step_fwd(img, root, 0, b); n && b->n < WALK_BYTES && nodes++ < WALK_NODES;
         n = step_fwd(n, root, 1, b)) {
        if (is_text(n) && n->content)
            sb_put_collapsed(b, (const char *)n->content, strlen((const char *)n->content),
                             WALK_BYTES);
        else if (is_block(n) || named(n, "br"))
            sb_space(b);
    }
}

static void text_before(xmlNode *img, xmlNode *root, sbuf *b) {
    int nodes = 0;
    for (xmlNode *n = step_back(img, root, b); n && b->n < WALK_BYTES && nodes++ < WALK_NODES;
         n = step_back(n, root, b))
        if (is_text(n) && n->content)
            sb_put_collapsed_rev(b, (const char *)n->content, strlen((const char *)n->content),
                                 WALK_BYTES);
    for (size_t i = 0; b->s && i < b->n / 2; i++) { /* back to reading order */
        char t = b->s[i];
        b->s[i] = b->s[b->n - 1 - i];
        b->s[b->n - 1 - i] = t;
    }
}

static char *context_of(xmlNode *img) {
    for (xmlNode *blk = img->parent; blk && blk->type == XML_ELEMENT_NODE; blk = blk->parent) {
        if (named(blk, "body") || named(blk, "html")) break;
        if (!is_block(blk)) continue;
        sbuf before = {0}, after = {0};
        text_before(img, blk, &before);
        text_after(img, blk, &after);
        char *b = before.n ? clean_text(before.s, before.n, ML_HTML_CONTEXT, 1) : NULL;
        char *a = after.n ? clean_text(after.s, after.n, ML_HTML_CONTEXT, 0) : NULL;
        free(before.s);
        free(after.s);
        if (!a && !b) continue;
        if (!a || !b) return a ? a : b;
        size_t nb = strlen(b), na = strlen(a);
        char *s = malloc(nb + na + 2);
        if (s) {
            memcpy(s, b, nb);
            s[nb] = ' ';
            memcpy(s + nb + 1, a, na + 1);
        }
        free(a);
        free(b);
        return s;
    }
    return NULL;
}

static char *caption_of(xmlNode *img) {
    xmlNode *fig = img->parent;
    while (fig && fig->type == XML_ELEMENT_NODE && !named(fig, "figure")) fig = fig->parent;
    if (!named(fig, "figure")) return NULL;
    /* a direct child first (the standard place), else any descendant */
    xmlNode *cap = NULL;
    for (xmlNode *c = fig->children; c && !cap; c = c->next)
        if (named(c, "figcaption")) cap = c;
    for (xmlNode *n = fig->children; n && !cap;) {
        if (named(n, "figcaption")) {
            cap = n;
            break;
        }
        if (n->type == XML_ELEMENT_NODE && n->children) {
            n = n->children;
            continue;
        }
        while (n && n != fig && !n->next) n = n->parent;
        n = (n && n != fig) ? n->next : NULL;
    }
    if (!cap) return NULL;
    sbuf b = {0};
    subtree_text(cap, &b, 4 * ML_HTML_MAX_TEXT + 8);
    char *t = b.n ? clean_text(b.s, b.n, ML_HTML_MAX_TEXT, 0) : NULL;
    free(b.s);
    return t;
}

/* srcset: the candidate with the largest width descriptor, else the largest
 * density (no descriptor = 1x); the first on ties.  Parsing follows the
 * HTML standard's candidate splitting (URLs may contain commas). */
static char *srcset_pick(const char *s) {
    char *best = NULL;
    double best_w = -1, best_x = -1;
    const char *p = s;
    for (;;) {
        while (is_space((unsigned char)*p) || *p == ',') p++;
        if (!*p) break;
        const char *u = p;
        while (*p && !is_space((unsigned char)*p)) p++;
        size_t un = (size_t)(p - u);
        int has_desc = 1;
        while (un && u[un - 1] == ',') un--, has_desc = 0;
        double w = -1, x = 1;
        if (has_desc) {
            /* descriptors up to the next comma outside parentheses */
            for (;;) {
                while (is_space((unsigned char)*p)) p++;
                if (!*p || *p == ',') break;
                const char *d = p;
                int paren = 0;
                while (*p && (paren || (!is_space((unsigned char)*p) && *p != ','))) {
                    if (*p == '(')
                        paren = 1;
                    else if (*p == ')')
                        paren = 0;
                    p++;
                }
                size_t dn = (size_t)(p - d);
                char tmp[32];
                if (dn >= 2 && dn < sizeof tmp) {
                    memcpy(tmp, d, dn - 1);
                    tmp[dn - 1] = 0;
                    char *end;
                    double v = strtod(tmp, &end);
                    if (*end == 0 && v > 0) {
                        if (d[dn - 1] == 'w')
                            w = v;
                        else if (d[dn - 1] == 'x')
                            x = v;
                    }
                }
            }
        }
        if (un == 0) continue;
        int better = !best || (w >= 0 ? w > best_w : (best_w < 0 && x > best_x));
        if (better) {
            char *c = malloc(un + 1);
            if (!c) break;
            memcpy(c, u, un);
            c[un] = 0;
            free(best);
            best = c, best_w = w, best_x = x;
        }
    }
    return best;
}

/* The reference a browser (or a lazy loader) would fetch, see html.h. */
static char *pick_ref(xmlNode *img) {
    static const char *const sets[] = {"srcset", "data-srcset"};
    static const char *const singles[] = {"data-src", "data-lazy-src", "data-original", "src"};
    for (size_t i = 0; i < 2; i++) {
        char *v = attr(img, sets[i]);
        char *r = v ? srcset_pick(v) : NULL;
        xmlFree(v);
        if (r) return r;
    }
    for (size_t i = 0; i < 4; i++) {
        char *v = attr(img, singles[i]);
        const char *p = v;
        while (p && is_space((unsigned char)*p)) p++;
        if (p && *p) {
            char *r = strdup(v);
            xmlFree(v);
            return r;
        }
        xmlFree(v);
    }
    return NULL;
}

static int add_image(ml_html_page *pg, xmlNode *n) {
    if (pg->nimages == pg->cap) {
        size_t nc = pg->cap ? 2 * pg->cap : 16;
        ml_html_image *p = realloc(pg->images, nc * sizeof *p);
        if (!p) return -1;
        pg->images = p, pg->cap = nc;
    }
    ml_html_image *im = &pg->images[pg->nimages++];
    memset(im, 0, sizeof *im);
    im->ref = pick_ref(n);
    im->alt = attr_text(n, "alt");
    im->title = attr_text(n, "title");
    im->width = attr_int(n, "width");
    im->height = attr_int(n, "height");
    im->caption = caption_of(n);
    im->context = context_of(n);
    char *cls = attr(n, "class"), *id = attr(n, "id");
    size_t len = (cls ? strlen(cls) : 0) + (id ? strlen(id) : 0) + 2;
    if ((cls || id) && (im->class_id = malloc(len)))
        snprintf(im->class_id, len, "%s %s", cls ? cls : "", id ? id : "");
    xmlFree(cls);
    xmlFree(id);
    return 0;
}

static int in_svg(xmlNode *n) {
    for (; n; n = n->parent)
        if (named(n, "svg")) return 1;
    return 0;
}

static void silent(void *ctx, const char *msg, ...) { (void)ctx, (void)msg; }

static void silent_structured(void *ctx, xmlErrorPtr e) { (void)ctx, (void)e; }

void ml_html_init(void) {
    xmlInitParser();
    xmlSetGenericErrorFunc(NULL, silent);
    xmlSetStructuredErrorFunc(NULL, silent_structured);
}

int ml_html_extract(const char *html, size_t len, const char *encoding, ml_html_page *out,
                    ml_error *err) {
    memset(out, 0, sizeof *out);
    if (len > 0x7fffffff) return ml_fail(err, "page of %zu bytes is too large", len);
    htmlDocPtr doc = htmlReadMemory(html, (int)len, NULL, encoding,
                                    HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                                        HTML_PARSE_NONET);
    if (!doc) return ml_fail(err, "libxml2 found no document");
    xmlNode *root = xmlDocGetRootElement(doc);
    if (named(root, "html")) out->lang = attr_text(root, "lang");
    int rc = 0;
    for (xmlNode *n = root; n && rc == 0;) {
        if (n->type == XML_ELEMENT_NODE) {
            if (!out->title && named(n, "title") && !in_svg(n)) {
                sbuf b = {0};
                subtree_text(n, &b, 4 * ML_HTML_MAX_TEXT + 8);
                out->title = b.n ? clean_text(b.s, b.n, ML_HTML_MAX_TEXT, 0) : NULL;
                free(b.s);
            } else if (!out->base && named(n, "base")) {
                char *v = attr(n, "href");
                if (v && (out->base = strdup(v)) == NULL) rc = -1;
                xmlFree(v);
            } else if (named(n, "img")) {
                if (out->nimages == ML_HTML_MAX_IMAGES)
                    out->more_images = 1;
                else if (add_image(out, n))
                    rc = -1;
            }
        }
        if (n->type == XML_ELEMENT_NODE && n->children && !named(n, "template")) {
            n = n->children;
            continue;
        }
        while (n && n != root && !n->next) n = n->parent;
        n = (n && n != root) ? n->next : NULL;
    }
    xmlFreeDoc(doc);
    if (rc) {
        ml_html_page_free(out);
        return ml_fail(err, "out of memory");
    }
    return 0;
}

void ml_html_page_free(ml_html_page *p) {
    for (size_t i = 0; i < p->nimages; i++) {
        ml_html_image *im = &p->images[i];
        free(im->ref);
        free(im->alt);
        free(im->title);
        free(im->caption);
        free(im->context);
        free(im->class_id);
    }
    free(p->images);
    free(p->title);
    free(p->lang);
    free(p->base);
    memset(p, 0, sizeof *p);
}
