/* cli.c - what the command files of the magiclens tool share (cli.h): the
 * usage text, the options of the model commands, loading a model, parsing
 * numbers and precisions with messages that name the option. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kernels/precision.h"

void cli_usage(FILE *f) {
    fprintf(f,
            "magiclens %s - image retrieval with open-ended instructions (MagicLens)\n\n"
            "usage:\n"
            "  magiclens embed --model M [--vocab V] --input items.jsonl --output out.npy|out.jsonl\n"
            "                  [--batch N] [--threads N] [--precision P] [--truncate] [--quiet]\n"
            "  magiclens embed --model M [--vocab V] --image X.jpg [--text T] [--truncate]\n"
            "  magiclens convert --model X.pkl [--vocab V] --output X.mlens\n"
            "  magiclens tokenize [--vocab V] [--truncate] TEXT...\n"
            "  magiclens info --model M [--vocab V]\n"
            "  magiclens index --model M --images DIR|LIST|TAR [--images ...] --output X.mlindex\n"
            "                  [--batch N] [--precision P] [--threads N] [--verbose] [--quiet]\n"
            "  magiclens index --model M --add PATH [--add ...] --output X.mlindex  # drops nothing\n"
            "  magiclens index --remove PATH [--remove ...] --output X.mlindex  # files, dirs, tars\n"
            "  magiclens index --output X.mlindex --ann [--nlist N]           # approximate search\n"
            "  magiclens index --output X.mlindex --compact    # drop deleted/superseded records\n"
            "  magiclens search --index X.mlindex --model M [--image Q] [--text T] [--like ID]\n"
            "                  [-k N] [--offset N] [--min-score S] [--prefix P] [--json]\n"
            "                  [--store auto|f32|f16|int8] [--exact] [--nprobe N]\n"
            "  magiclens export --index X.mlindex --output DIR  # embeddings.npy, metadata.jsonl\n"
            "  magiclens export --model M.pkl|M.mlens|model.safetensors [--init-fusion random]\n"
            "                  [--seed S] [--format flax|mlens] [--chunk-bytes N] --output OUT\n"
            "  magiclens train --init MODEL --data TRIPLETS --output DIR [--steps N] [--batch B]\n"
            "                  [--lr LR] [--train fusion|all] [--resume] ...  # docs/training.md\n"
            "  magiclens mine pages|fetch|pairs|instruct ...  # web pages -> triplets, docs/mining.md\n"
            "  magiclens eval BENCHMARK --data DIR --model M [--split val|test] [--output DIR]\n"
            "                  [--k 50] [--json]   # circo cirr fiq dtin genecis t2i custom\n"
            "  magiclens serve --index X.mlindex --model M [--host 127.0.0.1] [--port 8080]\n"
            "                  [--token T] [--workers N] [--queue N] [--web DIR]  # docs/serve.md\n"
            "  magiclens cpu                                  # instruction sets, default precision\n"
            "  magiclens vocab [--vocab V]                    # the vocabulary file found, or exit 1\n"
            "  magiclens bench --model M [--precision P] [--batch B] [--threads N] [--seconds S]\n"
            "                  [--text T]\n\n"
            "--precision fp32|bf16|int8|auto: numeric precision of the CLIP towers; auto (the\n"
            "default) is the fastest one that meets the accuracy bounds on this CPU: here %s.\n"
            "--threads N: compute threads (default: every CPU the process may use).\n"
            "M is an official checkpoint (magic_lens_clip_base.pkl / _large.pkl) or a .mlens\n"
            "file.  The CLIP vocabulary (bpe_simple_vocab_16e6.txt.gz) is looked up in this\n"
            "order: --vocab, $MAGICLENS_VOCAB, the copy in a .mlens model, models/ of the\n"
            "repository (scripts/download-model.sh puts it there), ../shared/assets/ beside\n"
            "the repository.  Without one, only image-only work (empty instruction) runs.\n",
            ML_VERSION, ml_precision_choice_name(ml_precision_auto()));
}

int cli_parse_opts(int argc, char **argv, cli_opts *o) {
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},  {"vocab", required_argument, 0, 'v'},
        {"input", required_argument, 0, 'i'},  {"output", required_argument, 0, 'o'},
        {"image", required_argument, 0, 'I'},  {"text", required_argument, 0, 't'},
        {"batch", required_argument, 0, 'b'},  {"threads", required_argument, 0, 'j'},
        {"truncate", no_argument, 0, 'T'},     {"quiet", no_argument, 0, 'q'},
        {"precision", required_argument, 0, 'p'}, {"seconds", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->batch = 8;
    o->precision = ML_PRECISION_AUTO;
    o->seconds = 10;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:v:i:o:I:t:b:j:Tqhp:s:", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'v': o->vocab = optarg; break;
        case 'i': o->input = optarg; break;
        case 'o': o->output = optarg; break;
        case 'I': o->image = optarg; break;
        case 't': o->text = optarg; o->text_set = 1; break;
        case 'b': o->batch = atoi(optarg); break;
        case 'j': o->threads = atoi(optarg); break;
        case 'T': o->truncate = 1; break;
        case 'q': o->quiet = 1; break;
        case 's': o->seconds = atof(optarg); break;
        case 'p':
            o->precision = !strcmp(optarg, "auto") ? ML_PRECISION_AUTO : ml_precision_parse(optarg);
            if (o->precision == -1 && strcmp(optarg, "auto")) {
                fprintf(stderr, "magiclens: --precision must be fp32, bf16, int8 or auto\n");
                return -1;
            }
            break;
        case 'h': cli_usage(stdout); exit(0);
        default: return -1;
        }
    }
    if (o->batch < 1 || o->batch > 4096) {
        fprintf(stderr, "magiclens: --batch must be between 1 and 4096\n");
        return -1;
    }
    if (o->threads > 0) ml_set_threads(o->threads);
    return 0;
}

ml_model *cli_load_model(const char *path, const char *vocab, int precision) {
    if (!path) {
        fprintf(stderr, "magiclens: --model is required\n");
        return NULL;
    }
    ml_error err;
    ml_load_options lo = {precision};
    ml_model *m = ml_model_load_opts(path, vocab, &lo, &err);
    if (!m) fprintf(stderr, "magiclens: %s\n", err.msg);
    return m;
}

int cli_parse_precision(const char *s) {
    int p = ml_precision_parse(s);
    if (p < 0) fprintf(stderr, "magiclens: --precision must be fp32, bf16, int8 or auto\n");
    return p;
}

ml_model *cli_load_model_opts(const cli_opts *o) {
    return cli_load_model(o->model, o->vocab, o->precision);
}

int cli_need(const char *value, const char *what) {
    if (value) return 0;
    fprintf(stderr, "magiclens: %s is required\n", what);
    return -1;
}

int cli_number(const char *cmd, const char *opt, const char *value, double lo, double hi,
               double *out) {
    char *end;
    errno = 0;
    double x = strtod(value, &end);
    if (errno || end == value || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "magiclens%s%s: %s %s: expected a number in [%g, %g]\n", cmd ? " " : "",
                cmd ? cmd : "", opt, value, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}
