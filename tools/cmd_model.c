/* cmd_model.c - the model commands: convert (.pkl -> .mlens), tokenize,
 * info, bench and cpu.
 *
 *   magiclens convert --model X.pkl [--vocab V] --output X.mlens
 *   magiclens tokenize [--vocab V] [--truncate] TEXT...
 *   magiclens vocab [--vocab V]
 *   magiclens info --model M
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/threads.h"
#include "io/native.h"
#include "io/tokenizer.h"
#include "io/vocab.h"
#include "kernels/cpu.h"
#include "magiclens.h"
#include "model/model.h"

/* ---- convert / tokenize / info ----------------------------------------- */

static char *config_json(const ml_config *c) {
    json_t *o = json_pack(
        "{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}", "format",
        "magiclens", "embed_dim", c->embed_dim, "image_size", c->image_size, "patch_size",
        c->patch_size, "vision_width", c->vision_width, "vision_layers", c->vision_layers,
        "vision_heads", c->vision_heads, "text_width", c->text_width, "text_layers",
        c->text_layers, "text_heads", c->text_heads, "vocab_size", c->vocab_size,
        "context_length", c->context_length, "fusion_layers", c->fusion_layers, "fusion_heads",
        c->fusion_heads, "fusion_ff", c->fusion_ff, "pool_heads", c->pool_heads, "pool_head_dim",
        c->pool_head_dim);
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

static int read_file(const char *path, unsigned char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t cap = 1 << 20, n = 0, r;
    unsigned char *buf = malloc(cap);
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            unsigned char *g = realloc(buf, cap *= 2);
            if (!g) free(buf);
            buf = g;
        }
    }
    fclose(f);
    if (!buf) return -1;
    *data = buf;
    *len = n;
    return 0;
}

/* The vocabulary file for commands without a model (io/vocab.h's order);
 * NULL when there is none. */
static const char *vocab_source(const cli_opts *o, char *buf, size_t cap) {
    return ml_vocab_find(o->vocab, buf, cap) == 0 ? buf : NULL;
}

int cmd_convert(int argc, char **argv) {
    cli_opts o;
    if (cli_parse_opts(argc, argv, &o) != 0) return 2;
    o.precision = ML_PRECISION_FP32; /* the file keeps the checkpoint's own weights */
    char vbuf[4096];
    const char *vpath = vocab_source(&o, vbuf, sizeof vbuf);
    if (!o.output) {
        fprintf(stderr, "magiclens: convert needs --model and --output\n");
        return 2;
    }
    ml_model *m = cli_load_model_opts(&o);
    if (!m) return 1;
    unsigned char *vocab = NULL;
    size_t vlen = 0;
    ml_error err;
    int rc = 1;
    if (vpath && read_file(vpath, &vocab, &vlen) != 0) {
        fprintf(stderr, "magiclens: %s: cannot read vocabulary\n", vpath);
    } else {
        if (!vpath && !o.quiet)
            fprintf(stderr, "magiclens: note: no CLIP vocabulary found (%s): %s will hold none "
                            "and embed images with the empty instruction only\n",
                    ML_VOCAB_ORDER, o.output);
        /* Copy only the network's tensors: a .mlens input also holds blobs. */
        ml_tensor_set net = {0};
        int ok = 1;
        for (size_t i = 0; i < m->tensors.count && ok; i++) {
            const ml_tensor *t = &m->tensors.items[i];
            if (!strncmp(t->name, "vocab/", 6) || !strncmp(t->name, "meta/", 5)) continue;
            ok = ml_tensor_set_add(&net, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes,
                                   &err) == 0;
        }
        char *cfg = config_json(ml_model_config(m));
        if (ok && ml_native_write(o.output, &net, cfg, vocab, vlen, &err) == 0) rc = 0;
        else fprintf(stderr, "magiclens: %s\n", err.msg);
        if (rc == 0 && !o.quiet)
            fprintf(stderr, "magiclens: wrote %s (%zu tensors)\n", o.output, net.count);
        free(cfg);
        ml_tensor_set_free(&net);
    }
    free(vocab);
    ml_model_free(m);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    cli_opts o;
    if (cli_parse_opts(argc, argv, &o) != 0) return 2;
    char vbuf[4096];
    const char *vpath = vocab_source(&o, vbuf, sizeof vbuf);
    ml_error err;
    if (!vpath) {
        fprintf(stderr, "magiclens: no CLIP vocabulary found (%s); scripts/download-model.sh "
                        "fetches it into models/\n", ML_VOCAB_ORDER);
        return 2;
    }
    ml_tokenizer *t = ml_tokenizer_load(vpath, &err);
    if (!t) {
        fprintf(stderr, "magiclens: %s\n", err.msg);
        return 1;
    }
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        int32_t ids[77];
        if (ml_tokenizer_encode(t, argv[i], 77, o.truncate, ids, &err) < 0) {
            fprintf(stderr, "magiclens: %s\n", err.msg);
            rc = 1;
            continue;
        }
        printf("[");
        for (int k = 0; k < 77; k++) printf(k ? ",%d" : "%d", ids[k]);
        printf("]\n");
    }
    ml_tokenizer_free(t);
    return rc;
}

int cmd_info(int argc, char **argv) {
    cli_opts o;
    if (cli_parse_opts(argc, argv, &o) != 0) return 2;
    o.precision = ML_PRECISION_FP32;
    ml_model *m = cli_load_model_opts(&o);
    if (!m) return 1;
    char *s = config_json(ml_model_config(m));
    printf("%s\n", s);
    free(s);
    ml_model_free(m);
    return 0;
}

/* ---- bench ------------------------------------------------------------ */

/* Times `fn` over whole batches until `seconds` pass (at least 2 batches
 * after one warm-up); returns items per second. */
static double time_batches(ml_model *m, int batch, const float *const *px, const char *const *texts,
                           double seconds, int *ok_all) {
    int D = ml_model_config(m)->embed_dim, *ok = calloc((size_t)batch, sizeof(int));
    float *out = malloc(sizeof(float) * (size_t)batch * D);
    ml_error err;
    double rate = 0;
    *ok_all = ok && out && ml_embed_pixels_batch(m, batch, px, texts, 0, out, NULL, ok, &err) == 0;
    if (*ok_all) {
        long done = 0;
        double t0 = ml_now(), el = 0;
        while (done < 2L * batch || el < seconds) {
            ml_embed_pixels_batch(m, batch, px, texts, 0, out, NULL, ok, &err);
            done += batch;
            el = ml_now() - t0;
        }
        rate = done / el;
    }
    free(ok), free(out);
    return rate;
}

int cmd_bench(int argc, char **argv) {
    cli_opts o;
    if (cli_parse_opts(argc, argv, &o) != 0) return 2;
    ml_model *m = cli_load_model_opts(&o);
    if (!m) return 1;
    const ml_config *c = ml_model_config(m);
    size_t px = (size_t)c->image_size * c->image_size * 3;
    float *pix = malloc(sizeof(float) * px * (size_t)o.batch);
    const float **ptrs = calloc((size_t)o.batch, sizeof *ptrs);
    const char **texts = calloc((size_t)o.batch, sizeof *texts);
    if (!pix || !ptrs || !texts) {
        fprintf(stderr, "magiclens: out of memory\n");
        return 1;
    }
    /* Normalised-looking inputs: the speed does not depend on the values. */
    uint32_t r = 12345;
    for (size_t i = 0; i < px * (size_t)o.batch; i++) {
        r = r * 1664525u + 1013904223u;
        pix[i] = (float)(r >> 8) / 16777216.0f * 4.0f - 2.0f;
    }
    for (int i = 0; i < o.batch; i++) ptrs[i] = pix + px * (size_t)i, texts[i] = o.text;
    int ok1 = 0, ok2 = 1;
    double img_rate = time_batches(m, o.batch, ptrs, NULL, o.seconds, &ok1), q_rate = 0;
    if (o.text_set) q_rate = time_batches(m, o.batch, ptrs, texts, o.seconds, &ok2);
    int rc = ok1 && ok2 ? 0 : 1;
    if (rc) {
        fprintf(stderr, "magiclens: bench: embedding failed\n");
    } else {
        printf("{\"images_per_s\": %.3f, \"ms_per_image\": %.2f, \"precision\": \"%s\", "
               "\"isa\": \"%s\", \"gemm\": \"%s\", \"threads\": %d, \"batch\": %d, "
               "\"image_size\": %d, \"embed_dim\": %d",
               img_rate, 1000.0 / img_rate, ml_precision_choice_name(ml_model_precision(m)),
               ml_isa_name(ml_isa_active()),
               ml_gemm_kernel_name((ml_precision)ml_model_precision(m), ml_isa_active()),
               ml_num_threads(), o.batch, c->image_size, c->embed_dim);
        if (o.text_set)
            printf(", \"queries_per_s\": %.3f, \"ms_per_query\": %.2f", q_rate, 1000.0 / q_rate);
        printf("}\n");
    }
    free(pix), free(ptrs), free(texts);
    ml_model_free(m);
    return rc;
}

/* Prints the vocabulary file the lookup finds (what the tests, `make run`
 * and the benchmarks use), or says where it looked and exits 1. */
int cmd_vocab(int argc, char **argv) {
    cli_opts o;
    if (cli_parse_opts(argc, argv, &o) != 0) return 2;
    char buf[4096];
    const char *v = vocab_source(&o, buf, sizeof buf);
    if (v && access(v, R_OK) != 0) {
        fprintf(stderr, "magiclens: %s: cannot read the vocabulary named by --vocab or "
                        "$MAGICLENS_VOCAB\n", v);
        return 1;
    }
    if (!v) {
        fprintf(stderr, "magiclens: no CLIP vocabulary found (looked in: %s); "
                        "scripts/download-model.sh fetches it into models/\n", ML_VOCAB_ORDER);
        return 1;
    }
    printf("%s\n", v);
    return 0;
}

/* Prints what this machine supports, for scripts and bug reports. */
int cmd_cpu(void) {
    json_t *model = json_string(ml_cpu_model()); /* (escaped: it is the CPU's own text) */
    char *model_s = json_dumps(model, JSON_ENCODE_ANY);
    printf("{\"model\": %s, \"isa_active\": \"%s\", \"isa_supported\": [", model_s ? model_s : "\"unknown\"",
           ml_isa_name(ml_isa_active()));
    free(model_s);
    json_decref(model);
    for (int i = ML_ISA_SCALAR, n = 0; i < ML_ISA_COUNT; i++)
        if (ml_isa_supported((ml_isa)i)) printf(n++ ? ", \"%s\"" : "\"%s\"", ml_isa_name((ml_isa)i));
    ml_isa isa = ml_isa_active();
    printf("], \"avx512_bf16\": %s, \"bf16_dot\": %s, \"avx512_vnni\": %s, \"avx_vnni\": %s, "
           "\"gemm\": {\"fp32\": \"%s\", \"bf16\": \"%s\", \"int8\": \"%s\"}, "
           "\"precision_auto\": \"%s\", \"precision_auto_why\": \"%s\", \"threads\": %d}\n",
           ml_cpu_has_avx512_bf16() ? "true" : "false", ml_cpu_bf16_dot() ? "true" : "false",
           ml_cpu_has_avx512_vnni() ? "true" : "false",
           ml_cpu_has_avx_vnni() ? "true" : "false", ml_gemm_kernel_name(ML_PREC_FP32, isa),
           ml_gemm_kernel_name(ML_PREC_BF16, isa), ml_gemm_kernel_name(ML_PREC_INT8, isa),
           ml_precision_choice_name(ml_precision_auto()), ml_precision_auto_reason(), ml_num_threads());
    return 0;
}
