/* magiclens.h - public API of libmagiclens.
 *
 * MagicLens (Zhang et al., ICML 2024) image retrieval with open-ended
 * instructions: load an official checkpoint (.pkl) or a native model file
 * (.mlens), and compute query / gallery embeddings.
 *
 * Conventions: functions that can fail take an `ml_error *` (may be NULL) and
 * return 0 on success, -1 on failure with a message naming the item and the
 * reason.  Objects returned by *_load / *_open are owned by the caller and
 * released with the matching *_free.
 */
#ifndef MAGICLENS_H
#define MAGICLENS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ML_VERSION "0.1.0"

typedef struct ml_error {
    char msg[512];
} ml_error;

/* ---- Model ----------------------------------------------------------- */

typedef struct ml_model ml_model;

/* Sizes derived from the checkpoint's tensor shapes. */
typedef struct ml_config {
    int embed_dim;        /* D: CLIP embedding width = fusion width       */
    int image_size;       /* input side in pixels (224)                   */
    int patch_size;       /* vision patch (16 base, 14 large)             */
    int vision_width, vision_layers, vision_heads;
    int text_width, text_layers, text_heads;
    int vocab_size, context_length;
    int fusion_layers, fusion_heads, fusion_ff;
    int pool_heads, pool_head_dim;
} ml_config;

/* Numeric precision of the CLIP towers' linear layers. */
typedef enum ml_precision_choice {
    ML_PRECISION_AUTO = -1, /* fastest that meets the accuracy bounds on this CPU */
    ML_PRECISION_FP32 = 0,  /* weights used in place from the file */
    ML_PRECISION_BF16 = 1,  /* bf16 weights; bf16 activations where the CPU has bf16 dot
                             * products (else float32 ones); fp32 accumulation */
    ML_PRECISION_INT8 = 2,  /* int8 weights (per-channel scales) and activations */
} ml_precision_choice;

typedef struct ml_load_options {
    int precision; /* ml_precision_choice */
} ml_load_options;

/* Loads a model from `path` (.pkl as released, or .mlens).  `vocab_path` is
 * the CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz); NULL means the
 * lookup order: $MAGICLENS_VOCAB, the vocabulary stored in a .mlens file,
 * models/bpe_simple_vocab_16e6.txt.gz of the repository, ../shared/assets/
 * beside it.  With none found the model still loads, for image-only work:
 * the empty instruction needs no vocabulary; other text is an error naming
 * what to do (ml_model_has_vocab tells).  ml_model_load uses
 * ML_PRECISION_FP32. */
ml_model *ml_model_load(const char *path, const char *vocab_path, ml_error *err);
ml_model *ml_model_load_opts(const char *path, const char *vocab_path,
                             const ml_load_options *opts, ml_error *err);
/* The precision in use (never AUTO) and its name ("fp32", "bf16", "int8"). */
int ml_model_precision(const ml_model *m);
const char *ml_precision_choice_name(int precision);
/* The precision AUTO resolves to on this machine (the fastest whose
 * accuracy meets auto's bound, cosine >= 0.999 to the float64 reference),
 * and a sentence saying why. */
int ml_precision_auto(void);
const char *ml_precision_auto_reason(void);
void ml_model_free(ml_model *m);
const ml_config *ml_model_config(const ml_model *m);
/* 1 when the model has a vocabulary (any instruction), 0 when it has none
 * (only the empty instruction). */
int ml_model_has_vocab(const ml_model *m);
/* The vocabulary file in the order above, without a model: `explicit_path`
 * (returned as is, even if missing), $MAGICLENS_VOCAB, models/ of the
 * repository, ../shared/assets/.  Writes the path to `out` and returns 0, or
 * returns -1 when there is none. */
int ml_vocab_find(const char *explicit_path, char *out, size_t cap);

/* An RGB image, 8 bits per channel, row-major, owned by whoever filled it. */
typedef struct ml_image {
    int width, height;
    uint8_t *rgb; /* width*height*3 bytes */
} ml_image;

/* Decodes JPEG, PNG, WebP or GIF (first frame) and converts to RGB the way
 * PIL's Image.convert("RGB") does.  Images over `max_pixels` (0 = default,
 * ML_DEFAULT_MAX_PIXELS) are refused before their pixels are decoded. */
#define ML_DEFAULT_MAX_PIXELS 178956970LL /* PIL's decompression-bomb error limit */
int ml_image_load(const char *path, long long max_pixels, ml_image *out, ml_error *err);
int ml_image_decode(const uint8_t *data, size_t len, long long max_pixels, ml_image *out,
                    ml_error *err);
void ml_image_free(ml_image *img);

/* Tokenizes `text` into the model's context (77 ids).  `truncate`: cut an
 * over-long text (SOT + first 75 tokens + EOT) instead of failing. */
int ml_model_tokenize(const ml_model *m, const char *text, int truncate, int32_t *ids,
                      ml_error *err);

/* The MagicLens embedding (L2-normalised, embed_dim floats) of an image and
 * an instruction; text NULL or "" gives the gallery embedding. */
int ml_embed(ml_model *m, const ml_image *img, const char *text, int truncate, float *out,
             ml_error *err);

/* Batched form: n images, n texts (entries may be NULL), out is n*embed_dim.
 * Per-item failures (e.g. text too long) are reported through item_ok[i]=0
 * and, for the first one, err; the other items are still computed.
 * Returns 0 when every item succeeded. */
int ml_embed_batch(ml_model *m, int n, const ml_image *const *imgs, const char *const *texts,
                   int truncate, float *out, int *item_ok, ml_error *err);

/* Preprocesses an image into the tower's input (image_size^2 * 3 floats,
 * HWC), as the released evaluation does.  Thread-safe. */
int ml_model_preprocess(const ml_model *m, const ml_image *img, float *pixels, ml_error *err);

/* Like ml_embed_batch, from preprocessed pixels.  clip_img (may be NULL)
 * receives the CLIP image embeddings, L2-normalised, n*embed_dim. */
int ml_embed_pixels_batch(ml_model *m, int n, const float *const *pixels,
                          const char *const *texts, int truncate, float *out, float *clip_img,
                          int *item_ok, ml_error *err);

/* The two halves of ml_embed_pixels_batch.  ml_embed_clip_image runs the
 * image tower: clip_raw receives n*embed_dim CLIP image embeddings, NOT
 * normalised (the fusion layers take them as they are).  ml_embed_from_clip
 * fuses them with instructions (text NULL/"" = gallery embedding); an index
 * that stores clip_raw can thus form image+instruction queries from an
 * indexed image without decoding it again. */
int ml_embed_clip_image(ml_model *m, int n, const float *const *pixels, float *clip_raw,
                        ml_error *err);
int ml_embed_from_clip(ml_model *m, int n, const float *clip_raw, const char *const *texts,
                       int truncate, float *out, int *item_ok, ml_error *err);

/* The CLIP text embedding of `text` (L2-normalised, embed_dim floats): the
 * text side of CLIP text-to-image retrieval, compared with the CLIP image
 * embeddings that ml_embed_pixels_batch returns in clip_img. */
int ml_embed_clip_text(ml_model *m, const char *text, int truncate, float *out, ml_error *err);

/* A 32-hex-digit fingerprint of the weights (names, shapes, dtypes, bytes):
 * the same model in .pkl or .mlens form gives the same value.  Indexes
 * record it so that a search with another model is refused. */
void ml_model_fingerprint(const ml_model *m, char out[33]);

/* Number of worker threads used by the compute kernels (0 = all cores). */
void ml_set_threads(int n);

#ifdef __cplusplus
}
#endif

/* ---- Index: build, update, search (magiclens_index.h) ------------------ */
#include "magiclens_index.h"

#endif
