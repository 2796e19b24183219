/* image.h - internal helpers of the image decoders (the API is in magiclens.h). */
#ifndef ML_IO_IMAGE_H
#define ML_IO_IMAGE_H

#include "magiclens.h"

/* Refuses zero, negative or absurd dimensions, and images over max_pixels
 * (0 or less = ML_DEFAULT_MAX_PIXELS), with a message saying which. */
int ml_image_check_size(long long w, long long h, long long max_pixels, ml_error *err);

#endif
