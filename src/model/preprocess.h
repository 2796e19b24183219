/* preprocess.h - MagicLens image preprocessing (model-spec section 2). */
#ifndef ML_MODEL_PREPROCESS_H
#define ML_MODEL_PREPROCESS_H

#include "magiclens.h"

/* The size the released data_utils.process_img resizes every image to. */
#define ML_PREPROCESS_BASE 224

/* MagicLens preprocessing: max-normalise, antialiased bilinear resize to 224x224 (as the released
 * data_utils.process_img), centre square crop + resize to `size` (the tower's input, usually 224),
 * CLIP mean/std normalisation. Writes size*size*3 floats, HWC order. */
int ml_preprocess_image(const ml_image *img, int size, float *out, ml_error *err);

#endif
