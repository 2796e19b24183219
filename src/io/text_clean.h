/* text_clean.h - the text cleaning CLIP's SimpleTokenizer applies before BPE.
 *
 * Reproduces, in order: ftfy.fix_text (ftfy 6.3.1 defaults, see
 * docs/tokenizer.md for what is and is not covered), html.unescape twice,
 * str.strip, collapsing every run of regex-module `\s` to one space, strip,
 * and Python's str.lower (full mapping: U+0130 and Final_Sigma included).
 *
 * Input must be valid UTF-8: invalid bytes are an error naming the offset
 * (Python would have failed earlier, when the bytes were decoded). */
#ifndef ML_IO_TEXT_CLEAN_H
#define ML_IO_TEXT_CLEAN_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

/* Cleans `len` bytes of UTF-8 into a malloc'd array of code points (*out,
 * *n_out; *out is non-NULL even when empty).  Returns 0, or -1 with err. */
int ml_text_clean_cp(const char *utf8, size_t len, uint32_t **out, size_t *n_out,
                     ml_error *err);

/* Same, as a malloc'd NUL-terminated UTF-8 string; NULL with err on failure. */
char *ml_text_clean(const char *utf8, size_t len, ml_error *err);

/* Encodes code points as UTF-8 into buf (4 bytes each at most); returns bytes. */
size_t ml_utf8_encode(const uint32_t *cp, size_t n, char *buf);

#endif
