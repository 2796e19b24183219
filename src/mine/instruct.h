/* instruct.h - stage 5 of mining: the parts of `mine instruct` that are not
 * HTTP (docs/mining-pairs.md): the few-shot prompt file and its
 * placeholders, checking an LLM answer, template instructions (--no-llm)
 * and the answer cache / journal. */
#ifndef ML_MINE_INSTRUCT_H
#define ML_MINE_INSTRUCT_H

#include <jansson.h>
#include <stdio.h>

#include "magiclens.h"

/* ---- prompt file ---------------------------------------------------------
 * Sections start with a line "=== system", "=== user", "=== assistant" or
 * "=== vision"; lines before the first section starting with '#' are
 * comments.  system/user/assistant sections become the chat messages in
 * order (few-shot examples are user/assistant pairs; the last user message
 * is the one with the pair's placeholders); "vision" is the text sent with
 * an image to the vision endpoint.  {name} is replaced by a field below
 * (an unknown {name} is an error, other braces are literal), and a line
 * whose placeholders are all empty is left out. */
enum {
    ML_F_PAGE_TITLE,
    ML_F_PAGE_HOST,
    ML_F_QUERY_ALT,
    ML_F_QUERY_TITLE,
    ML_F_QUERY_CAPTION,
    ML_F_QUERY_CONTEXT,
    ML_F_QUERY_DESCRIPTION,
    ML_F_TARGET_ALT,
    ML_F_TARGET_TITLE,
    ML_F_TARGET_CAPTION,
    ML_F_TARGET_CONTEXT,
    ML_F_TARGET_DESCRIPTION,
    ML_NFIELDS
};
extern const char *const ml_prompt_fields[ML_NFIELDS]; /* "page_title", ... */

typedef struct ml_prompt {
    struct ml_prompt_msg {
        char role[16];
        char *text;
    } * msgs;
    int n;
    char *vision; /* NULL: the built-in caption request */
} ml_prompt;

int ml_prompt_load(ml_prompt *p, const char *path, ml_error *err);
int ml_prompt_parse(ml_prompt *p, const char *text, const char *name, ml_error *err);
void ml_prompt_free(ml_prompt *p);
/* The messages array for one pair (vals[i] NULL or "" = empty). */
json_t *ml_prompt_render(const ml_prompt *p, const char *const vals[ML_NFIELDS]);
const char *ml_prompt_vision(const ml_prompt *p);

/* ---- answers -------------------------------------------------------------- */

typedef struct ml_check_opts {
    int min_words, max_words;
    double min_ascii; /* share of ASCII among letters; 0 turns the check off */
} ml_check_opts;

/* The instruction in an answer ({"instruction": "..."}, possibly in a code
 * fence or with text around it), whitespace-collapsed, malloc'ed; NULL with
 * *why = "bad_json" or "no_instruction". */
char *ml_instruction_parse(const char *answer, const char **why);
/* NULL when usable, else the reason: too_short, too_long, not_english,
 * leak (mentions "image 1", "the first image", ...), url (a URL or a file
 * name, or one of the NULL-terminated `forbid` strings). */
const char *ml_instruction_check(const char *s, const ml_check_opts *o, const char *const *forbid);

/* --no-llm: the template instruction for a pair (see docs), or NULL when
 * the target has no text.  qtext/ttext: alt, else caption, else title. */
char *ml_template_instruction(const char *qtext, const char *ttext, const char *qimg,
                              const char *timg);
/* The text the templates use: whitespace collapsed, trailing punctuation
 * dropped, at most 12 words (malloc'ed; NULL if empty). */
char *ml_template_text(const char *s);

/* ---- cache / journal -----------------------------------------------------
 * A JSONL file, one {"key": HEX, ...} per line, appended and flushed to
 * disk entry by entry, so that a killed run loses at most the line being
 * written (a partial last line is cut off when the file is opened).  Later
 * lines win.  The file is locked (flock) while open. */
typedef struct ml_cache {
    FILE *f;
    json_t *map; /* key -> entry */
    char *path;
    long loaded, bad_lines;
} ml_cache;

int ml_cache_open(ml_cache *c, const char *path, ml_error *err);
json_t *ml_cache_get(const ml_cache *c, const char *key); /* borrowed */
/* Appends entry (its "key" is set here; the reference is stolen). */
int ml_cache_put(ml_cache *c, const char *key, json_t *entry, ml_error *err);
void ml_cache_close(ml_cache *c);

/* 32 hex digits of XXH3-128 of the compact, key-sorted JSON of `v`. */
void ml_json_hash(json_t *v, char out[33]);

#endif
