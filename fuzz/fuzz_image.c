/* fuzz_image.c - libFuzzer target: decode arbitrary bytes as an image
 * (JPEG/PNG/WebP/GIF) and, when that succeeds, preprocess it.
 * Build: make fuzz (or clang -fsanitize=fuzzer,address,undefined ...). */
#include <stdint.h>
#include <stdlib.h>

#include "magiclens.h"
#include "model/preprocess.h"

/* Small enough that a fuzzed header cannot make us allocate much. */
#define FUZZ_MAX_PIXELS (4LL << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ml_image img;
    ml_error err;
    if (ml_image_decode(data, size, FUZZ_MAX_PIXELS, &img, &err) != 0) return 0;
    /* A cheap second stage keeps the fuzzer fast; 224 is the first stage. */
    float *out = malloc(sizeof(float) * 32 * 32 * 3);
    if (out) ml_preprocess_image(&img, 32, out, &err);
    free(out);
    ml_image_free(&img);
    return 0;
}
