/* image.c - decode JPEG / PNG / WebP / GIF into 8-bit RGB exactly as PIL's
 * Image.open(p).convert("RGB") does (Pillow 9.4, checked pixel for pixel by
 * tests/unit/test_image.c against tests/reference/make_images.py).
 *
 * PIL rules reproduced here:
 *   - gray replicated; alpha dropped without compositing; tRNS ignored;
 *   - palette: 256-entry table initialised to the gray ramp (i,i,i), then
 *     overwritten by the file's palette (indices past a short palette are gray);
 *   - 16-bit RGB(A)/gray+alpha PNG: the high byte of each sample;
 *     16-bit gray PNG: PIL's mode "I", whose convert("RGB") clips to 255;
 *   - CMYK/YCCK JPEG: libjpeg's CMYK output read as inverted ("CMYK;I"), then
 *     Pillow's cmyk2rgb with its MULDIV255 rounding;
 *   - a JPEG cut short before its last scanline is an error ("image file is
 *     truncated"), as with PIL's default LOAD_TRUNCATED_IMAGES = False; a
 *     missing EOI after the last scanline is accepted, as PIL does;
 *   - GIF: first frame on a canvas of the logical screen size, filled with
 *     the transparent index (else index 0), mapped through its colour table.
 * Sizes are checked against max_pixels right after the header, before any
 * pixel memory is allocated.  Library errors never exit or print: libjpeg
 * and libpng report through longjmp into the decoder's own frame. */
#include "io/image.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gif_lib.h>
#include <jpeglib.h>
#include <jerror.h> /* JWRN_JPEG_EOF */
#include <png.h>
#include <webp/decode.h>

#include "core/error.h"
#include "core/mem.h"

/* Refused whatever max_pixels says: keeps w*h*3 far from size_t overflow. */
#define ML_IMAGE_MAX_SIDE (1 << 24)
/* A real progressive JPEG has about 10 scans; thousands are a CPU bomb. */
#define ML_JPEG_MAX_SCANS 1000

int ml_image_check_size(long long w, long long h, long long max_pixels, ml_error *err) {
    if (max_pixels <= 0) max_pixels = ML_DEFAULT_MAX_PIXELS;
    if (w <= 0 || h <= 0 || w > ML_IMAGE_MAX_SIDE || h > ML_IMAGE_MAX_SIDE)
        return ml_fail(err, "invalid image dimensions %lldx%lld", w, h);
    if (w * h > max_pixels)
        return ml_fail(err,
                       "image size %lldx%lld (%lld pixels) exceeds the limit of %lld pixels "
                       "(possible decompression bomb)",
                       w, h, w * h, max_pixels);
    return 0;
}

static int image_alloc(ml_image *out, int w, int h, ml_error *err) {
    out->rgb = ml_malloc((size_t)w * (size_t)h * 3, err);
    if (!out->rgb) return -1;
    out->width = w;
    out->height = h;
    return 0;
}

/* The palette table PIL builds: a gray ramp overwritten by `n` RGB entries. */
static void palette_init(uint8_t table[256][3], const uint8_t *rgb, int n) {
    for (int i = 0; i < 256; i++) table[i][0] = table[i][1] = table[i][2] = (uint8_t)i;
    if (n > 256) n = 256;
    for (int i = 0; i < n; i++) memcpy(table[i], rgb + 3 * i, 3);
}

static void expand_palette(uint8_t *dst, const uint8_t *idx, int n, const uint8_t table[256][3]) {
    for (int x = 0; x < n; x++) memcpy(dst + 3 * x, table[idx[x]], 3);
}

/* ---------------------------------------------------------------- JPEG */

typedef struct jpeg_job {
    struct jpeg_error_mgr mgr; /* first: libjpeg hands us &mgr as cinfo->err */
    struct jpeg_progress_mgr progress;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    int rows_done;      /* every scanline was delivered */
    uint8_t *row;       /* one decoded scanline, owned here */
    ml_image *out;      /* out->rgb owned here until success */
    long long max_pixels;
} jpeg_job;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_job *job = (jpeg_job *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, job->msg);
    longjmp(job->jump, 1);
}

/* Warnings are silent, except running out of data before the last scanline:
 * libjpeg would pad the image with gray, PIL raises "image file is truncated". */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    jpeg_job *job = (jpeg_job *)cinfo->err;
    if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF && !job->rows_done) {
        snprintf(job->msg, sizeof job->msg, "image file is truncated");
        longjmp(job->jump, 1);
    }
}

static void jpeg_on_progress(j_common_ptr cinfo) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (cinfo->is_decompressor && d->input_scan_number > ML_JPEG_MAX_SCANS) {
        jpeg_job *job = (jpeg_job *)cinfo->err;
        snprintf(job->msg, sizeof job->msg, "JPEG has more than %d scans", ML_JPEG_MAX_SCANS);
        longjmp(job->jump, 1);
    }
}

/* Pillow's cmyk2rgb on inverted ("CMYK;I") samples. */
static void cmyk_inv_to_rgb(uint8_t *dst, const uint8_t *src, int n) {
    for (int x = 0; x < n; x++, src += 4, dst += 3) {
        int nk = src[3]; /* 255 - (255 - k) */
        for (int c = 0; c < 3; c++) {
            int t = (255 - src[c]) * nk + 128;
            int v = nk - (((t >> 8) + t) >> 8);
            dst[c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

static void jpeg_row_to_rgb(uint8_t *dst, const uint8_t *src, int n, int comps) {
    if (comps == 3) {
        memcpy(dst, src, (size_t)n * 3);
    } else if (comps == 1) {
        for (int x = 0; x < n; x++) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[x];
    } else {
        cmyk_inv_to_rgb(dst, src, n);
    }
}

static int jpeg_pick_output(j_decompress_ptr d, jpeg_job *job) {
    switch (d->num_components) {
    case 1: d->out_color_space = JCS_GRAYSCALE; return 0;
    case 3: d->out_color_space = JCS_RGB; return 0;
    case 4: d->out_color_space = JCS_CMYK; return 0; /* libjpeg turns YCCK into CMYK */
    default:
        snprintf(job->msg, sizeof job->msg, "unsupported JPEG with %d components",
                 d->num_components);
        return -1;
    }
}

/* Runs libjpeg; everything it may longjmp over lives in *job, not here. */
static int jpeg_run(j_decompress_ptr d, jpeg_job *job, const uint8_t *data, size_t len,
                    ml_error *err) {
    if (setjmp(job->jump)) return -1;
    jpeg_create_decompress(d);
    d->progress = &job->progress;
    jpeg_mem_src(d, data, (unsigned long)len);
    jpeg_read_header(d, TRUE);
    if (ml_image_check_size(d->image_width, d->image_height, job->max_pixels, err) != 0) {
        job->msg[0] = 0; /* err already says why */
        return -1;
    }
    if (jpeg_pick_output(d, job) != 0) return -1;
    jpeg_start_decompress(d);
    int w = (int)d->output_width, comps = d->output_components;
    job->row = malloc((size_t)w * (size_t)comps);
    if (!job->row || image_alloc(job->out, w, (int)d->output_height, err) != 0) {
        snprintf(job->msg, sizeof job->msg, "out of memory");
        return -1;
    }
    while (d->output_scanline < d->output_height) {
        uint8_t *dst = job->out->rgb + (size_t)d->output_scanline * (size_t)w * 3;
        JSAMPROW rows[1] = {job->row};
        if (jpeg_read_scanlines(d, rows, 1) != 1) {
            snprintf(job->msg, sizeof job->msg, "image file is truncated");
            return -1;
        }
        jpeg_row_to_rgb(dst, job->row, w, comps);
    }
    job->rows_done = 1;
    jpeg_finish_decompress(d);
    return 0;
}

static int decode_jpeg(const uint8_t *data, size_t len, long long max_pixels, ml_image *out,
                       ml_error *err) {
    struct jpeg_decompress_struct d;
    jpeg_job job;
    memset(&d, 0, sizeof d);
    memset(&job, 0, sizeof job);
    job.out = out;
    job.max_pixels = max_pixels;
    d.err = jpeg_std_error(&job.mgr);
    job.mgr.error_exit = jpeg_on_error;
    job.mgr.emit_message = jpeg_on_message;
    job.progress.progress_monitor = jpeg_on_progress;
    int rc = jpeg_run(&d, &job, data, len, err);
    jpeg_destroy_decompress(&d);
    free(job.row);
    if (rc != 0) {
        ml_image_free(out);
        if (job.msg[0]) ml_fail(err, "invalid JPEG: %s", job.msg);
    }
    return rc;
}

/* ---------------------------------------------------------------- PNG */

typedef struct png_job {
    const uint8_t *data;
    size_t len, pos;
    char msg[200];
    uint8_t *native; /* decoded rows before conversion, owned here */
    ml_image *out;   /* out->rgb owned here until success */
    long long max_pixels;
} png_job;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_job *job = png_get_error_ptr(png);
    snprintf(job->msg, sizeof job->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* silent: PIL ignores what libpng only warns about */
}

static void png_on_read(png_structp png, png_bytep dst, size_t n) {
    png_job *job = png_get_io_ptr(png);
    if (n > job->len - job->pos) png_error(png, "image file is truncated");
    memcpy(dst, job->data + job->pos, n);
    job->pos += n;
}

/* Row layout after png_setup_transforms: 1 (gray or palette index), 2 (gray
 * + alpha), 3 (RGB) or 4 (RGBA) bytes a pixel, or 16-bit big-endian gray. */
typedef struct png_layout {
    int channels, gray16, palette;
    uint8_t table[256][3];
} png_layout;

static void png_row_to_rgb(uint8_t *dst, const uint8_t *src, int n, const png_layout *l) {
    if (l->palette) {
        expand_palette(dst, src, n, l->table);
    } else if (l->gray16) { /* PIL mode "I" -> RGB clips to 0..255 */
        for (int x = 0; x < n; x++) {
            int v = src[2 * x] << 8 | src[2 * x + 1];
            dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = (uint8_t)(v > 255 ? 255 : v);
        }
    } else if (l->channels <= 2) {
        for (int x = 0; x < n; x++)
            dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[x * l->channels];
    } else {
        for (int x = 0; x < n; x++) memcpy(dst + 3 * x, src + x * l->channels, 3);
    }
}

static void png_setup_transforms(png_structp png, png_infop info, png_layout *l) {
    int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
    memset(l, 0, sizeof *l);
    l->gray16 = depth == 16 && type == PNG_COLOR_TYPE_GRAY;
    if (depth == 16 && !l->gray16) png_set_strip_16(png); /* keeps the high byte, like PIL */
    if (type == PNG_COLOR_TYPE_PALETTE) {
        png_colorp plte = NULL;
        int n = 0;
        png_get_PLTE(png, info, &plte, &n);
        uint8_t rgb[256 * 3];
        for (int i = 0; i < n && i < 256; i++) {
            rgb[3 * i] = plte[i].red;
            rgb[3 * i + 1] = plte[i].green;
            rgb[3 * i + 2] = plte[i].blue;
        }
        palette_init(l->table, rgb, n);
        l->palette = 1;
        if (depth < 8) png_set_packing(png); /* one index a byte, unscaled */
    } else if (type == PNG_COLOR_TYPE_GRAY && depth < 8) {
        png_set_expand_gray_1_2_4_to_8(png); /* x255/x85/x17, as PIL's unpackers */
    }
    l->channels = png_get_channels(png, info);
}

static int png_run(png_structp png, png_infop info, png_job *job, ml_error *err) {
    if (setjmp(png_jmpbuf(png))) return -1;
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff); /* our own check is clearer */
    /* PIL never checks IDAT CRCs: a bad one must not refuse the image. */
    png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
    png_set_read_fn(png, job, png_on_read);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if (ml_image_check_size(w, h, job->max_pixels, err) != 0) return -1;
    png_layout l;
    png_setup_transforms(png, info, &l);
    int interlaced = png_get_interlace_type(png, info) != PNG_INTERLACE_NONE;
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    /* An interlaced image needs all its rows at hand; otherwise one row. */
    job->native = malloc(rowbytes * (interlaced ? h : 1));
    if (!job->native || image_alloc(job->out, (int)w, (int)h, err) != 0)
        return ml_fail(err, "invalid PNG: out of memory");
    for (int p = 0; p < passes; p++)
        for (png_uint_32 y = 0; y < h; y++) {
            uint8_t *row = job->native + (interlaced ? y * rowbytes : 0);
            png_read_row(png, row, NULL);
            if (!interlaced) png_row_to_rgb(job->out->rgb + (size_t)y * w * 3, row, (int)w, &l);
        }
    if (interlaced)
        for (png_uint_32 y = 0; y < h; y++)
            png_row_to_rgb(job->out->rgb + (size_t)y * w * 3, job->native + y * rowbytes, (int)w,
                           &l);
    /* No png_read_end: like PIL, whatever follows the pixels is not needed. */
    return 0;
}

static int decode_png(const uint8_t *data, size_t len, long long max_pixels, ml_image *out,
                      ml_error *err) {
    png_job job;
    memset(&job, 0, sizeof job);
    job.data = data;
    job.len = len;
    job.out = out;
    job.max_pixels = max_pixels;
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &job, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return ml_fail(err, "invalid PNG: out of memory");
    }
    int rc = png_run(png, info, &job, err);
    png_destroy_read_struct(&png, &info, NULL);
    free(job.native);
    if (rc != 0) {
        ml_image_free(out);
        if (job.msg[0]) ml_fail(err, "invalid PNG: %s", job.msg);
    }
    return rc;
}

/* ---------------------------------------------------------------- WebP */

static int decode_webp(const uint8_t *data, size_t len, long long max_pixels, ml_image *out,
                       ml_error *err) {
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(data, len, &f);
    if (st == VP8_STATUS_NOT_ENOUGH_DATA)
        return ml_fail(err, "invalid WebP: image file is truncated");
    if (st != VP8_STATUS_OK) return ml_fail(err, "invalid WebP: bad header (status %d)", (int)st);
    if (f.has_animation) return ml_fail(err, "animated WebP is not supported");
    if (ml_image_check_size(f.width, f.height, max_pixels, err) != 0) return -1;
    if (image_alloc(out, f.width, f.height, err) != 0) return -1;
    /* MODE_RGB drops alpha without premultiplying: PIL's RGBA -> RGB. */
    size_t size = (size_t)f.width * (size_t)f.height * 3;
    if (!WebPDecodeRGBInto(data, len, out->rgb, size, f.width * 3)) {
        ml_image_free(out);
        return ml_fail(err, "invalid WebP: corrupt or truncated image data");
    }
    return 0;
}

/* ---------------------------------------------------------------- GIF */

typedef struct gif_src {
    const uint8_t *data;
    size_t len, pos;
} gif_src;

static int gif_on_read(GifFileType *gif, GifByteType *dst, int n) {
    gif_src *s = gif->UserData;
    size_t k = (size_t)n < s->len - s->pos ? (size_t)n : s->len - s->pos;
    memcpy(dst, s->data + s->pos, k);
    s->pos += k;
    return (int)k;
}

static const char *gif_reason(int code) {
    if (code == D_GIF_ERR_READ_FAILED || code == D_GIF_ERR_EOF_TOO_SOON)
        return "image file is truncated";
    const char *s = GifErrorString(code);
    return s ? s : "corrupt data";
}

/* Skips an extension; remembers the transparent index of a graphic control one. */
static int gif_extension(GifFileType *gif, int *transparent) {
    int code;
    GifByteType *ext;
    if (DGifGetExtension(gif, &code, &ext) == GIF_ERROR) return -1;
    if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4)
        *transparent = (ext[1] & 1) ? ext[4] : -1;
    while (ext)
        if (DGifGetExtensionNext(gif, &ext) == GIF_ERROR) return -1;
    return 0;
}

/* Reads the current frame's indices into `canvas` (cw wide) at its offset. */
static int gif_read_frame(GifFileType *gif, uint8_t *canvas, int cw) {
    const GifImageDesc *d = &gif->Image;
    static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
    int npass = d->Interlace ? 4 : 1;
    for (int p = 0; p < npass; p++)
        for (int y = d->Interlace ? start[p] : 0; y < d->Height; y += d->Interlace ? step[p] : 1)
            if (DGifGetLine(gif, canvas + (size_t)(d->Top + y) * cw + d->Left, d->Width) ==
                GIF_ERROR)
                return -1;
    return 0;
}

static int gif_first_frame(GifFileType *gif, int transparent, long long max_pixels,
                           ml_image *out, ml_error *err) {
    const GifImageDesc *d = &gif->Image;
    if (ml_image_check_size(d->Width, d->Height, max_pixels, err) != 0) return -1;
    /* PIL grows the canvas when the frame sticks out of the logical screen. */
    int cw = gif->SWidth > d->Left + d->Width ? gif->SWidth : d->Left + d->Width;
    int ch = gif->SHeight > d->Top + d->Height ? gif->SHeight : d->Top + d->Height;
    if (ml_image_check_size(cw, ch, max_pixels, err) != 0) return -1;
    uint8_t *canvas = malloc((size_t)cw * (size_t)ch);
    if (!canvas) return ml_fail(err, "invalid GIF: out of memory");
    memset(canvas, transparent >= 0 ? transparent : 0, (size_t)cw * (size_t)ch);
    if (gif_read_frame(gif, canvas, cw) != 0) {
        free(canvas);
        return ml_fail(err, "invalid GIF: %s", gif_reason(gif->Error));
    }
    const ColorMapObject *map = d->ColorMap ? d->ColorMap : gif->SColorMap;
    uint8_t table[256][3], rgb[256 * 3];
    int n = map ? map->ColorCount : 0;
    for (int i = 0; i < n && i < 256; i++) {
        rgb[3 * i] = map->Colors[i].Red;
        rgb[3 * i + 1] = map->Colors[i].Green;
        rgb[3 * i + 2] = map->Colors[i].Blue;
    }
    palette_init(table, rgb, n);
    if (image_alloc(out, cw, ch, err) != 0) {
        free(canvas);
        return -1;
    }
    for (int y = 0; y < ch; y++)
        expand_palette(out->rgb + (size_t)y * cw * 3, canvas + (size_t)y * cw, cw, table);
    free(canvas);
    return 0;
}

static int gif_walk(GifFileType *gif, long long max_pixels, ml_image *out, ml_error *err) {
    if (ml_image_check_size(gif->SWidth, gif->SHeight, max_pixels, err) != 0) return -1;
    int transparent = -1;
    for (;;) {
        GifRecordType type;
        if (DGifGetRecordType(gif, &type) == GIF_ERROR) break;
        if (type == IMAGE_DESC_RECORD_TYPE) {
            if (DGifGetImageDesc(gif) == GIF_ERROR) break;
            return gif_first_frame(gif, transparent, max_pixels, out, err);
        }
        if (type == EXTENSION_RECORD_TYPE) {
            if (gif_extension(gif, &transparent) != 0) break;
        } else if (type == TERMINATE_RECORD_TYPE) {
            return ml_fail(err, "invalid GIF: no image in the file");
        }
    }
    return ml_fail(err, "invalid GIF: %s", gif_reason(gif->Error));
}

static int decode_gif(const uint8_t *data, size_t len, long long max_pixels, ml_image *out,
                      ml_error *err) {
    gif_src src = {data, len, 0};
    int code = 0;
    GifFileType *gif = DGifOpen(&src, gif_on_read, &code);
    if (!gif) return ml_fail(err, "invalid GIF: %s", gif_reason(code));
    int rc = gif_walk(gif, max_pixels, out, err);
    DGifCloseFile(gif, &code);
    return rc;
}

/* ---------------------------------------------------------------- API */

static int has_prefix(const uint8_t *d, size_t len, const char *magic, size_t n) {
    return len >= n && memcmp(d, magic, n) == 0;
}

int ml_image_decode(const uint8_t *data, size_t len, long long max_pixels, ml_image *out,
                    ml_error *err) {
    if (!out) return ml_fail(err, "no output image");
    memset(out, 0, sizeof *out);
    if (!data || len == 0) return ml_fail(err, "empty file");
    if (has_prefix(data, len, "\xff\xd8\xff", 3))
        return decode_jpeg(data, len, max_pixels, out, err);
    if (has_prefix(data, len, "\x89PNG\r\n\x1a\n", 8))
        return decode_png(data, len, max_pixels, out, err);
    if (has_prefix(data, len, "GIF87a", 6) || has_prefix(data, len, "GIF89a", 6))
        return decode_gif(data, len, max_pixels, out, err);
    if (len >= 12 && has_prefix(data, len, "RIFF", 4) && memcmp(data + 8, "WEBP", 4) == 0)
        return decode_webp(data, len, max_pixels, out, err);
    return ml_fail(err, "unknown image format (not JPEG, PNG, WebP or GIF)");
}

int ml_image_load(const char *path, long long max_pixels, ml_image *out, ml_error *err) {
    if (out) memset(out, 0, sizeof *out);
    ml_file_map map;
    if (ml_file_map_open(path, &map, err) != 0) return -1; /* message names the path */
    int rc = ml_image_decode(map.data, map.size, max_pixels, out, err);
    ml_file_map_close(&map);
    if (rc != 0) ml_fail_prefix(err, "%s", path);
    return rc;
}

void ml_image_free(ml_image *img) {
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->width = img->height = 0;
}
