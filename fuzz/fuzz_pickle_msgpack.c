/* fuzz_pickle_msgpack.c - libFuzzer target: the .pkl path on arbitrary bytes.
 * The input goes through the pickle unwrapper and, whether or not it is a
 * pickle, the bytes go through the msgpack flattener too, so both parsers
 * see arbitrary data.  Every tensor found is read end to end so a wrong
 * size or pointer shows up under ASan. */
#include <stdint.h>
#include <stdlib.h>

#include "io/msgpack.h"
#include "io/pickle.h"
#include "io/tensors.h"

static void flatten(const uint8_t *p, size_t n) {
    ml_tensor_set s = {0};
    ml_error err;
    if (ml_flax_msgpack_to_tensors(p, n, &s, &err) == 0) {
        volatile float sink = 0;
        for (size_t i = 0; i < s.count; i++) {
            int64_t numel = ml_tensor_numel(&s.items[i]);
            for (int64_t k = 0; k < numel; k++) sink += ml_tensor_get_f32(&s.items[i], k);
        }
        (void)sink;
    }
    ml_tensor_set_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *payload;
    size_t n;
    uint8_t *owned = NULL;
    ml_error err;
    if (ml_pickle_unwrap_bytes(data, size, &payload, &n, &owned, &err) == 0) flatten(payload, n);
    free(owned);
    flatten(data, size);
    return 0;
}
