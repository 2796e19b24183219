/* tokenizer.h - CLIP's BPE tokenizer (OpenAI clip/simple_tokenizer.py), as
 * MagicLens uses it through scenic: [SOT] + encode(text) + [EOT], zero padded
 * to the context length.  See docs/tokenizer.md for what is matched.
 *
 * A loaded tokenizer is immutable: ml_tokenizer_encode may be called from any
 * number of threads on the same object. */
#ifndef ML_IO_TOKENIZER_H
#define ML_IO_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "magiclens.h"

#define ML_TOKEN_SOT 49406
#define ML_TOKEN_EOT 49407
#define ML_VOCAB_SIZE 49408

typedef struct ml_tokenizer ml_tokenizer;

/* Loads bpe_simple_vocab_16e6.txt.gz from a file. */
ml_tokenizer *ml_tokenizer_load(const char *gz_path, ml_error *err);
/* Same file's bytes in memory (not kept after the call). */
ml_tokenizer *ml_tokenizer_from_gz(const uint8_t *data, size_t len, ml_error *err);
void ml_tokenizer_free(ml_tokenizer *t);

/* Cleans and encodes `utf8` (NUL-terminated, valid UTF-8); writes context_len
 * ids (SOT, tokens, EOT, zeros).  Returns the number of non-padding ids, or -1
 * with err (invalid UTF-8, or too long without `truncate`: "text ... is 93
 * tokens, over the context of 77; use --truncate").  With `truncate` an
 * over-long text keeps SOT, its first context_len-2 tokens and EOT. */
int ml_tokenizer_encode(const ml_tokenizer *t, const char *utf8, int context_len, int truncate,
                        int32_t *ids, ml_error *err);

#endif
