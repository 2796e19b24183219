/* cmd_embed.c - `magiclens embed`: one image (+ instruction) to a JSON line,
 * or a JSONL file of items to .npy / .jsonl (ml_embed_file,
 * src/model/embed_file.h).
 *
 *   magiclens embed --model M [--vocab V] --input items.jsonl --output out.npy|out.jsonl
 *   magiclens embed --model M --image X.jpg [--text T]
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "magiclens.h"
#include "model/embed_file.h"

static int embed_one(ml_model *m, const cli_opts *o) {
    ml_image img;
    ml_error err;
    if (ml_image_load(o->image, 0, &img, &err) != 0) {
        fprintf(stderr, "magiclens: %s\n", err.msg);
        return 1;
    }
    int D = ml_model_config(m)->embed_dim;
    float *e = malloc(sizeof(float) * (size_t)D);
    int rc = e ? ml_embed(m, &img, o->text, o->truncate, e, &err) : -1;
    ml_image_free(&img);
    if (rc != 0) {
        fprintf(stderr, "magiclens: %s: %s\n", o->image, e ? err.msg : "out of memory");
        free(e);
        return 1;
    }
    json_t *obj = json_object(), *a = json_array();
    json_object_set_new(obj, "image", json_string(o->image));
    json_object_set_new(obj, "text", json_string(o->text ? o->text : ""));
    for (int d = 0; d < D; d++) json_array_append_new(a, json_real(e[d]));
    json_object_set_new(obj, "embedding", a);
    char *s = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(9));
    printf("%s\n", s);
    free(s);
    json_decref(obj);
    free(e);
    return 0;
}

int cmd_embed(int argc, char **argv) {
    cli_opts o;
    if (cli_parse_opts(argc, argv, &o) != 0) return 2;
    if (!o.input == !o.image) {
        fprintf(stderr, "magiclens: embed needs exactly one of --input FILE or --image FILE\n");
        return 2;
    }
    ml_model *m = cli_load_model_opts(&o);
    if (!m) return 1;
    ml_embed_file_opts eo = {o.input, o.output, o.batch, o.truncate, o.quiet};
    int rc = o.input ? ml_embed_file(m, &eo) : embed_one(m, &o);
    ml_model_free(m);
    return rc;
}
