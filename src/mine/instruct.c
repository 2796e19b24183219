/* instruct.c - prompt file, answer checks, templates and the answer cache of
 * `mine instruct` (see instruct.h). */
#include "mine/instruct.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/error.h"
#include "core/fileio.h"

const char *const ml_prompt_fields[ML_NFIELDS] = {
    "page_title",    "page_host",      "query_alt",         "query_title",
    "query_caption", "query_context",  "query_description", "target_alt",
    "target_title",  "target_caption", "target_context",    "target_description"};

#define MAX_PROMPT_BYTES (1u << 20)

/* ---- prompt ------------------------------------------------------------- */

/* Index of the field named s[0..n), or -1. */
static int field_index(const char *s, size_t n) {
    for (int i = 0; i < ML_NFIELDS; i++)
        if (strlen(ml_prompt_fields[i]) == n && !strncmp(ml_prompt_fields[i], s, n)) return i;
    return -1;
}

/* At p == '{': length of a placeholder name "{[a-z_]+}" (0 if not one). */
static size_t placeholder(const char *p) {
    size_t n = 1;
    while (p[n] == '_' || (p[n] >= 'a' && p[n] <= 'z')) n++;
    return n > 1 && p[n] == '}' ? n - 1 : 0;
}

void ml_prompt_free(ml_prompt *p) {
    for (int i = 0; i < p->n; i++) free(p->msgs[i].text);
    free(p->msgs), free(p->vision);
    memset(p, 0, sizeof *p);
}

/* Copies lines [a, b) without the blank lines at either end. */
static char *trimmed_block(const char *a, const char *b) {
    while (a < b) {
        const char *e = memchr(a, '\n', (size_t)(b - a));
        e = e ? e + 1 : b;
        const char *k = a;
        while (k < e && isspace((unsigned char)*k)) k++;
        if (k < e) break;
        a = e;
    }
    while (b > a && isspace((unsigned char)b[-1])) b--;
    return strndup(a, (size_t)(b - a));
}

static int add_section(ml_prompt *p, const char *role, const char *a, const char *b,
                       const char *name, int line, ml_error *err) {
    char *text = trimmed_block(a, b);
    if (!text) return ml_fail(err, "out of memory");
    if (!*text) {
        free(text);
        return ml_fail(err, "%s line %d: empty '=== %s' section", name, line, role);
    }
    if (!strcmp(role, "vision")) {
        free(p->vision);
        p->vision = text;
        return 0;
    }
    struct ml_prompt_msg *m = realloc(p->msgs, (size_t)(p->n + 1) * sizeof *m);
    if (!m) {
        free(text);
        return ml_fail(err, "out of memory");
    }
    p->msgs = m;
    snprintf(m[p->n].role, sizeof m[p->n].role, "%s", role);
    m[p->n++].text = text;
    return 0;
}

int ml_prompt_parse(ml_prompt *p, const char *text, const char *name, ml_error *err) {
    memset(p, 0, sizeof *p);
    const char *s = text, *body = NULL;
    char role[16] = "";
    int line = 0, role_line = 0, rc = 0;
    while (rc == 0 && *s) {
        const char *e = strchr(s, '\n');
        e = e ? e + 1 : s + strlen(s);
        line++;
        if (!strncmp(s, "===", 3)) {
            char r[16] = "";
            sscanf(s + 3, " %15[a-z]", r);
            if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") &&
                strcmp(r, "vision"))
                rc = ml_fail(err,
                             "%s line %d: unknown section '%.*s' (system, user, assistant "
                             "or vision)",
                             name, line, (int)(e - s - (e[-1] == '\n')), s);
            if (rc == 0 && body) rc = add_section(p, role, body, s, name, role_line, err);
            snprintf(role, sizeof role, "%s", r);
            body = e, role_line = line;
        } else if (body) {
            for (const char *k = s; rc == 0 && k < e; k++) {
                size_t n = *k == '{' ? placeholder(k) : 0;
                if (n && field_index(k + 1, n) < 0)
                    rc = ml_fail(err, "%s line %d: unknown placeholder {%.*s}", name, line, (int)n,
                                 k + 1);
            }
        } else if (*s != '#' && strspn(s, " \t\r\n") != (size_t)(e - s)) {
            rc = ml_fail(err, "%s line %d: text before the first '=== system|user|assistant' line",
                         name, line);
        }
        s = e;
    }
    if (rc == 0 && body) rc = add_section(p, role, body, s, name, role_line, err);
    if (rc == 0 && (p->n == 0 || strcmp(p->msgs[p->n - 1].role, "user")))
        rc = ml_fail(err, "%s: the last message must be a '=== user' section (the pair)", name);
    if (rc) ml_prompt_free(p);
    return rc;
}

int ml_prompt_load(ml_prompt *p, const char *path, ml_error *err) {
    unsigned char *data;
    size_t len;
    if (ml_read_all(path, MAX_PROMPT_BYTES, &data, &len, err)) return -1;
    char *text = realloc(data, len + 1);
    if (!text) {
        free(data);
        return ml_fail(err, "out of memory");
    }
    text[len] = 0;
    int rc = strlen(text) != len ? ml_fail(err, "%s: contains a NUL byte", path)
                                 : ml_prompt_parse(p, text, path, err);
    free(text);
    return rc;
}

/* Appends to a growing string; on failure *s becomes NULL. */
static void put(char **s, size_t *n, size_t *cap, const char *a, size_t k) {
    if (!*s) return;
    if (*n + k + 1 > *cap) {
        size_t nc = (*n + k + 1) * 2;
        char *t = realloc(*s, nc);
        if (!t) {
            free(*s);
            *s = NULL;
            return;
        }
        *s = t, *cap = nc;
    }
    memcpy(*s + *n, a, k);
    *n += k;
    (*s)[*n] = 0;
}

static char *render_text(const char *t, const char *const vals[ML_NFIELDS]) {
    size_t n = 0, cap = strlen(t) + 64;
    char *out = malloc(cap);
    if (!out) return NULL;
    out[0] = 0;
    while (*t) {
        const char *e = strchr(t, '\n');
        e = e ? e + 1 : t + strlen(t);
        /* a line whose placeholders are all empty is left out */
        int holders = 0, filled = 0;
        for (const char *k = t; k < e; k++) {
            size_t pn = *k == '{' ? placeholder(k) : 0;
            int f = pn ? field_index(k + 1, pn) : -1;
            if (f >= 0) holders++, filled += vals[f] && *vals[f];
        }
        if (!holders || filled) {
            for (const char *k = t; k < e;) {
                size_t pn = *k == '{' ? placeholder(k) : 0;
                int f = pn ? field_index(k + 1, pn) : -1;
                if (f >= 0) {
                    if (vals[f]) put(&out, &n, &cap, vals[f], strlen(vals[f]));
                    k += pn + 2;
                } else {
                    put(&out, &n, &cap, k, 1);
                    k++;
                }
            }
        }
        t = e;
    }
    while (out && n > 0 && out[n - 1] == '\n') out[--n] = 0;
    return out;
}

json_t *ml_prompt_render(const ml_prompt *p, const char *const vals[ML_NFIELDS]) {
    json_t *a = json_array();
    for (int i = 0; a && i < p->n; i++) {
        char *t = render_text(p->msgs[i].text, vals);
        json_t *m = t ? json_pack("{ss ss}", "role", p->msgs[i].role, "content", t) : NULL;
        free(t);
        if (!m || json_array_append_new(a, m)) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

const char *ml_prompt_vision(const ml_prompt *p) {
    return p->vision ? p->vision
                     : "Describe this image in one short English sentence: the main object or "
                       "scene and its visible attributes. Answer with the sentence only.";
}

/* ---- answers ------------------------------------------------------------ */

/* Whitespace runs -> one space, ends trimmed (malloc'ed). */
static char *collapse(const char *s) {
    char *o = malloc(strlen(s) + 1), *w = o;
    if (!o) return NULL;
    int space = 0;
    for (; *s; s++) {
        if (isspace((unsigned char)*s)) {
            space = w != o;
        } else {
            if (space) *w++ = ' ';
            space = 0;
            *w++ = *s;
        }
    }
    *w = 0;
    return o;
}

char *ml_instruction_parse(const char *answer, const char **why) {
    const char *a = strchr(answer, '{'), *b = strrchr(answer, '}');
    *why = "bad_json";
    if (!a || !b || b < a) return NULL;
    json_t *o = json_loadb(a, (size_t)(b - a + 1), 0, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    json_t *v = json_object_get(o, "instruction");
    char *s = json_is_string(v) ? collapse(json_string_value(v)) : NULL;
    json_decref(o);
    if (!s) *why = "no_instruction";
    return s;
}

static int word_char(char c) { return isalnum((unsigned char)c) || (unsigned char)c >= 0x80; }

/* `pat` occurs in lower-cased `s` as whole words. */
static int has_phrase(const char *s, const char *pat) {
    size_t n = strlen(pat);
    for (const char *p = strstr(s, pat); p; p = strstr(p + 1, pat))
        if ((p == s || !word_char(p[-1])) && !word_char(p[n])) return 1;
    return 0;
}

const char *ml_instruction_check(const char *s, const ml_check_opts *o, const char *const *forbid) {
    static const char *const leaks[] = {"image 1",         "image 2",
                                        "image one",       "image two",
                                        "image #1",        "image #2",
                                        "picture 1",       "picture 2",
                                        "photo 1",         "photo 2",
                                        "first image",     "second image",
                                        "1st image",       "2nd image",
                                        "first picture",   "second picture",
                                        "first photo",     "second photo",
                                        "the picture",     "query image",
                                        "target image",    "source image",
                                        "reference image", "other image",
                                        "the other photo", NULL};
    static const char *const urlish[] = {"http://", "https://", "www.",  ".jpg", ".jpeg", ".png",
                                         ".webp",   ".gif",     ".html", ".htm", NULL};
    int words = 0, ascii = 0, other = 0;
    for (const char *p = s; *p;) {
        while (*p == ' ') p++;
        if (*p) words++;
        while (*p && *p != ' ') p++;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalpha(*p))
            ascii++;
        else if (*p >= 0xC0)
            other++; /* a UTF-8 lead byte: one non-ASCII character */
    }
    if (words < o->min_words) return "too_short";
    if (words > o->max_words) return "too_long";
    if (o->min_ascii > 0 && (!ascii || ascii < o->min_ascii * (ascii + other)))
        return "not_english";
    char *low = strdup(s);
    if (!low) return "out_of_memory";
    for (char *p = low; *p; p++) *p = (char)tolower((unsigned char)*p);
    const char *why = NULL;
    for (int i = 0; !why && leaks[i]; i++)
        if (has_phrase(low, leaks[i])) why = "leak";
    for (int i = 0; !why && urlish[i]; i++)
        if (strstr(low, urlish[i])) why = "url";
    for (int i = 0; !why && forbid && forbid[i]; i++)
        if (strlen(forbid[i]) >= 4 && strcasestr(s, forbid[i])) why = "url";
    free(low);
    return why;
}

/* ---- templates ---------------------------------------------------------- */

char *ml_template_text(const char *s) {
    if (!s) return NULL;
    char *t = collapse(s);
    if (!t) return NULL;
    /* at most 12 words */
    int words = 0;
    for (char *p = t; *p; p++)
        if (*p == ' ' && ++words == 12) {
            *p = 0;
            break;
        }
    size_t n = strlen(t);
    while (n > 0 && strchr(".,;:!?- ", t[n - 1])) t[--n] = 0;
    if (!n) {
        free(t);
        return NULL;
    }
    return t;
}

/* FNV-1a, 32 bits: tiny and easy to recompute anywhere (docs, tests). */
static uint32_t fnv1a(const char *s, uint32_t h) {
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

char *ml_template_instruction(const char *qtext, const char *ttext, const char *qimg,
                              const char *timg) {
    static const char *const with_query[] = {"find {t}", "{t} instead of {q}", "show {t}",
                                             "from the same page: {t}", "replace {q} with {t}"};
    static const char *const target_only[] = {"find {t}", "show {t}", "from the same page: {t}"};
    char *t = ml_template_text(ttext), *q = ml_template_text(qtext);
    char *out = NULL;
    if (t) {
        int use_q = q && strcasecmp(q, t) != 0;
        uint32_t h = fnv1a(timg, fnv1a("\n", fnv1a(qimg, 2166136261u)));
        const char *tpl = use_q ? with_query[h % 5] : target_only[h % 3];
        size_t n = 0, cap = strlen(tpl) + strlen(t) + (q ? strlen(q) : 0) + 1;
        if ((out = malloc(cap))) {
            out[0] = 0;
            for (const char *k = tpl; *k;) {
                const char *v = !strncmp(k, "{t}", 3) ? t : !strncmp(k, "{q}", 3) ? q : NULL;
                if (v) {
                    memcpy(out + n, v, strlen(v) + 1);
                    n += strlen(v), k += 3;
                } else {
                    out[n++] = *k++;
                    out[n] = 0;
                }
            }
        }
    }
    free(t), free(q);
    return out;
}

/* ---- cache -------------------------------------------------------------- */

void ml_json_hash(json_t *v, char out[33]) {
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    XXH128_hash_t h = XXH3_128bits(s ? s : "", s ? strlen(s) : 0);
    free(s);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h.high64, (unsigned long long)h.low64);
}

int ml_cache_open(ml_cache *c, const char *path, ml_error *err) {
    memset(c, 0, sizeof *c);
    c->map = json_object();
    c->path = strdup(path);
    if (!c->map || !c->path) {
        ml_cache_close(c);
        return ml_fail(err, "out of memory");
    }
    if (!(c->f = fopen(path, "a+"))) {
        ml_cache_close(c);
        return ml_fail(err, "%s: cannot open cache: %s", path, strerror(errno));
    }
    if (flock(fileno(c->f), LOCK_EX | LOCK_NB) != 0) {
        ml_cache_close(c);
        return ml_fail(err, "%s: in use by another run (locked)", path);
    }
    rewind(c->f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long long good_end = 0;
    while ((n = getline(&line, &cap, c->f)) > 0) {
        if (line[n - 1] != '\n') break; /* cut short by a kill: dropped below */
        good_end += n;
        json_t *o = json_loads(line, 0, NULL);
        json_t *k = json_object_get(o, "key");
        if (json_is_string(k)) {
            json_object_set(c->map, json_string_value(k), o);
            c->loaded++;
        } else {
            c->bad_lines++;
        }
        json_decref(o);
    }
    free(line);
    fflush(c->f);
    if (ftruncate(fileno(c->f), (off_t)good_end) != 0) {
        ml_cache_close(c);
        return ml_fail(err, "%s: cannot cut off a partial line: %s", path, strerror(errno));
    }
    fseek(c->f, 0, SEEK_END);
    return 0;
}

json_t *ml_cache_get(const ml_cache *c, const char *key) { return json_object_get(c->map, key); }

int ml_cache_put(ml_cache *c, const char *key, json_t *entry, ml_error *err) {
    json_t *line = json_pack("{ss}", "key", key); /* the key first: easy to grep */
    if (line) json_object_update(line, entry);
    char *s = line ? json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(line);
    int rc = 0;
    if (!s || fputs(s, c->f) == EOF || fputc('\n', c->f) == EOF || fflush(c->f) != 0 ||
        fdatasync(fileno(c->f)) != 0)
        rc = ml_fail(err, "%s: cannot write the cache: %s", c->path,
                     s ? strerror(errno) : "out of memory");
    free(s);
    if (rc == 0) json_object_set(c->map, key, entry); /* without "key": not needed */
    json_decref(entry);
    return rc;
}

void ml_cache_close(ml_cache *c) {
    if (c->f) fclose(c->f); /* also releases the lock */
    json_decref(c->map);
    free(c->path);
    memset(c, 0, sizeof *c);
}
