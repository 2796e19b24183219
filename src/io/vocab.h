/* vocab.h - where the CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz)
 * comes from.  One lookup order for the library, the CLI, the tests and the
 * scripts (`magiclens vocab` prints its answer):
 *   1. an explicit path (--vocab),
 *   2. $MAGICLENS_VOCAB,
 *   3. the copy carried in a .mlens model file (checked by the model loader),
 *   4. models/bpe_simple_vocab_16e6.txt.gz of the repository (where
 *      scripts/download-model.sh puts it),
 *   5. ../shared/assets/ beside the repository, when present.
 * "The repository" is the folder above the running program's folder (build/
 * magiclens), or two above (build/tests/...), then the current folder. */
#ifndef ML_IO_VOCAB_H
#define ML_IO_VOCAB_H

#include <stddef.h>

#include "magiclens.h"

#define ML_VOCAB_FILE "bpe_simple_vocab_16e6.txt.gz"

/* Steps 1-2: `explicit_path` when set, else $MAGICLENS_VOCAB, else NULL.
 * A path given this way is used as is: a missing file is an error, never a
 * reason to look elsewhere. */
const char *ml_vocab_user_path(const char *explicit_path);

/* Steps 4-5: writes the first existing file to `out` and returns 0, or
 * returns -1 when there is none (or `cap` is too small). */
int ml_vocab_search_files(char *out, size_t cap);

/* The order above in one line, for error messages and --help. */
extern const char ML_VOCAB_ORDER[];

#endif
