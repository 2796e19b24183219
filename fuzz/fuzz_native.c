/* fuzz_native.c - libFuzzer target: the .mlens loader on arbitrary bytes,
 * through the in-memory entry point the file loader uses after mapping.
 *
 * Each input is loaded twice: as is (mostly stopped by the checksums), and
 * with its checksums recomputed by the harness, so mutations reach the
 * directory and bounds checks behind them.  The copy is 64-byte aligned,
 * standing in for the page-aligned mapping. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/mem.h"
#include "io/native.h"

static uint64_t le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Rewrites every checksum the loader will verify (best effort, bounded). */
static void fix_crcs(uint8_t *d, size_t size) {
    if (size < ML_NATIVE_HEADER_SIZE) return;
    uint64_t dir = 64, dsize = le(d + 40, 8), count = le(d + 24, 8);
    if (dsize > size - dir) return;
    uint64_t pos = dir;
    for (uint64_t i = 0; i < count && dir + dsize - pos >= ML_NATIVE_ENTRY_SIZE; i++) {
        uint8_t *e = d + pos;
        uint64_t off = le(e, 8), n = le(e + 8, 8), nl = le(e + 22, 2);
        if (off <= size && n <= size - off) put32(e + 16, (uint32_t)crc32(0, d + off, (uInt)n));
        pos += ML_NATIVE_ENTRY_SIZE + ((nl + 7) & ~(uint64_t)7);
        if (pos > dir + dsize) break;
    }
    uint32_t c = (uint32_t)crc32(0, d, 60);
    c = (uint32_t)crc32(c, d + dir, (uInt)dsize);
    put32(d + 60, c);
}

static void load(const uint8_t *p, size_t size) {
    ml_tensor_set s = {0};
    ml_error err;
    if (ml_native_load_mem(p, size, &s, &err) == 0) {
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
    uint8_t *copy = ml_aligned_alloc(size, NULL);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    load(copy, size);
    fix_crcs(copy, size);
    load(copy, size);
    free(copy);
    return 0;
}
