/* fuzz_index.c - libFuzzer target: opening an index whose shard file, or
 * whose ann.ivf, holds arbitrary bytes.
 *
 * The first input byte picks the mode:
 *   0: the whole shard file is the input (header, slots, records);
 *   1: a valid header, and the input as the record region, with every
 *      record checksum, the record count and the commit slot recomputed by
 *      the harness, so mutations reach the record parser behind them;
 *   2: the input is ann.ivf (ml_ivf_load).
 * Files live in a private temporary folder created once per process. */
#define XXH_STATIC_LINKING_ONLY
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "index/search.h"
#include "index/store.h"

static char g_dir[256], g_shard[300], g_ivf[300];
static uint8_t g_header[512];

static void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/fuzz_index_%d/x.mlindex", (int)getpid());
    char parent[256];
    snprintf(parent, sizeof parent, "/tmp/fuzz_index_%d", (int)getpid());
    mkdir(parent, 0700);
    ml_store_meta meta = {.dim = 4, .clip_dim = 4};
    ml_error err;
    ml_store *s = ml_store_open(g_dir, ML_STORE_WRITE, &meta, &err);
    if (!s || ml_store_ensure_shards(s, 1, &err) != 0) {
        fprintf(stderr, "fuzz_index setup: %s\n", err.msg);
        abort();
    }
    ml_store_close(s);
    snprintf(g_shard, sizeof g_shard, "%s/shard-0000.log", g_dir);
    snprintf(g_ivf, sizeof g_ivf, "%s/ann.ivf", g_dir);
    FILE *f = fopen(g_shard, "rb");
    if (!f || fread(g_header, 1, sizeof g_header, f) != sizeof g_header) abort();
    fclose(f);
}

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Fixes record checksums in place; returns the number of records. */
static uint64_t fix_records(uint8_t *r, size_t n) {
    uint64_t count = 0;
    size_t off = 0;
    while (n - off >= 32) {
        uint32_t len = get32(r + off + 8);
        if (len < 32 || len % 8 || len > n - off) break;
        XXH3_state_t st;
        XXH3_64bits_reset(&st);
        XXH3_64bits_update(&st, r + off, 16);
        XXH3_64bits_update(&st, r + off + 24, len - 24);
        put64(r + off + 16, XXH3_64bits_digest(&st));
        off += len, count++;
    }
    return count;
}

static void write_file(const char *path, const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    fwrite(a, 1, na, f);
    if (nb) fwrite(b, 1, nb, f);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir[0]) setup();
    if (size < 1) return 0;
    int mode = data[0] % 3;
    data++, size--;
    ml_error err;
    if (mode == 2) {
        write_file(g_ivf, data, size, NULL, 0);
        ml_ivf *ivf = ml_ivf_load(g_ivf, &err);
        ml_ivf_free(ivf);
        return 0;
    }
    if (mode == 0) {
        write_file(g_shard, data, size, NULL, 0);
    } else {
        size_t n = size & ~(size_t)7;
        uint8_t *rec = malloc(n ? n : 1), hdr[512];
        memcpy(rec, data, n);
        uint64_t count = fix_records(rec, n);
        memcpy(hdr, g_header, sizeof hdr);
        uint8_t *slot = hdr + 64;
        put64(slot, 1), put64(slot + 8, 512 + n), put64(slot + 16, count);
        put64(slot + 24, XXH3_64bits(slot, 24));
        write_file(g_shard, hdr, sizeof hdr, rec, n);
        free(rec);
    }
    ml_store *s = ml_store_open(g_dir, ML_STORE_READ, NULL, &err);
    if (s) {
        /* Touch what a search would: every live item's strings and vectors. */
        volatile float sink = 0;
        const ml_item *it = ml_store_items(s);
        for (size_t i = 0; i < ml_store_count(s); i++)
            sink += it[i].emb[0] + it[i].clip[3] + (float)strlen(it[i].path);
        (void)sink;
        ml_store_close(s);
    }
    return 0;
}
