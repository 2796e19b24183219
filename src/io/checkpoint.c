/* checkpoint.c - the released .pkl checkpoints: a pickle wrapping the bytes
 * of flax.serialization.to_bytes(params). */
#include <stdlib.h>

#include "core/error.h"
#include "io/msgpack.h"
#include "io/pickle.h"
#include "io/tensors.h"

int ml_checkpoint_load_pkl(const char *path, ml_tensor_set *out, ml_error *err) {
    ml_tensor_set s = {0};
    const uint8_t *payload;
    size_t payload_len;
    uint8_t *decoded = NULL;
    *out = s;
    /* The mapping goes into the set first so every exit path releases it once. */
    if (ml_file_map_open(path, &s.file, err) != 0) return -1;
    if (ml_pickle_unwrap_bytes(s.file.data, s.file.size, &payload, &payload_len, &decoded,
                               err) != 0) {
        ml_tensor_set_free(&s);
        return ml_fail_prefix(err, "%s", path);
    }
    if (decoded && ml_tensor_set_own(&s, decoded, err) != 0) {
        free(decoded);
        ml_tensor_set_free(&s);
        return ml_fail_prefix(err, "%s", path);
    }
    if (ml_flax_msgpack_to_tensors(payload, payload_len, &s, err) != 0)
        return ml_fail_prefix(err, "%s", path); /* s was released by the callee */
    if (s.count == 0) {
        ml_tensor_set_free(&s);
        return ml_fail(err, "%s: checkpoint holds no tensors", path);
    }
    *out = s;
    return 0;
}
