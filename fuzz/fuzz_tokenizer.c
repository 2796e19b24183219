/* fuzz_tokenizer.c - libFuzzer target: text cleaning and encoding of
 * arbitrary bytes.  The vocabulary comes from $MAGICLENS_VOCAB (default
 * ../shared/assets/bpe_simple_vocab_16e6.txt.gz); it is loaded once and kept
 * for the whole run (libFuzzer has no teardown hook). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/text_clean.h"
#include "io/tokenizer.h"

static ml_tokenizer *vocab_once(void) {
    static ml_tokenizer *tok;
    if (!tok) {
        const char *path = getenv("MAGICLENS_VOCAB");
        ml_error err;
        tok = ml_tokenizer_load(path ? path : "../shared/assets/bpe_simple_vocab_16e6.txt.gz",
                                &err);
        if (!tok) abort();
    }
    return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ml_tokenizer *tok = vocab_once();
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0'; /* the API takes C strings: a NUL ends the text early */
    ml_error err;
    int32_t ids[77];
    for (int truncate = 0; truncate < 2; truncate++) {
        int n = ml_tokenizer_encode(tok, text, 77, truncate, ids, &err);
        if (n > 77 || (n >= 0 && (ids[0] != ML_TOKEN_SOT || ids[n - 1] != ML_TOKEN_EOT))) abort();
        for (int i = 0; n > 0 && i < 77; i++)
            if (ids[i] < 0 || ids[i] >= ML_VOCAB_SIZE || (i >= n && ids[i] != 0)) abort();
        if (truncate && n < 0 && !strstr(err.msg, "UTF-8")) abort();
    }
    char *clean = ml_text_clean(text, strlen(text), &err);
    free(clean);
    free(text);
    return 0;
}
