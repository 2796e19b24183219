/* amx_tiles.h - the AMX tile configuration shared by the AMX kernels
 * (qgemm_amx.c, attention_amx.c).  Include only from files compiled with
 * -mamx-tile.  Every tile is used as 16 rows x 64 bytes; the configuration
 * is per thread, so each worker loads it before its first tile instruction
 * and releases the tiles (_tile_release) when done. */
#ifndef ML_KERNELS_AMX_TILES_H
#define ML_KERNELS_AMX_TILES_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

typedef struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

static inline void tiles_begin(void) {
    _Alignas(64) tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    _tile_loadconfig(&cfg);
}

#endif
