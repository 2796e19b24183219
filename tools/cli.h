/* cli.h - what the command files of the magiclens tool share. */
#ifndef ML_TOOLS_CLI_H
#define ML_TOOLS_CLI_H

#include <stdio.h>

#include "magiclens.h"

/* The usage text of `magiclens --help`. */
void cli_usage(FILE *f);

/* The options of the model commands (embed, convert, tokenize, info, bench). */
typedef struct cli_opts {
    const char *model, *vocab, *input, *output, *image, *text;
    int batch, threads, truncate, quiet, text_set, precision;
    double seconds;
} cli_opts;
/* Parses them (--help prints the usage and exits); -1 after printing an error. */
int cli_parse_opts(int argc, char **argv, cli_opts *o);

/* Loads a model, printing the error; NULL on failure. */
ml_model *cli_load_model(const char *path, const char *vocab, int precision);
ml_model *cli_load_model_opts(const cli_opts *o);
/* 0 when value is set, else prints "magiclens: WHAT is required" and returns -1. */
int cli_need(const char *value, const char *what);
/* fp32|bf16|int8 -> ML_PRECISION_*, or -1 after printing an error. */
int cli_parse_precision(const char *s);

/* Parses `value` of option `opt` as a number in [lo, hi] (NaN and trailing
 * junk refused); on failure prints "magiclens CMD: OPT VALUE: expected ..."
 * ("magiclens: ..." when cmd is NULL) and returns -1. */
int cli_number(const char *cmd, const char *opt, const char *value, double lo, double hi,
               double *out);

int cmd_embed(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_cpu(void);
int cmd_vocab(int argc, char **argv);
int cmd_index(int argc, char **argv);
int cmd_search(int argc, char **argv);
int cmd_export_index(int argc, char **argv);
int cmd_export_model(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_mine(int argc, char **argv);
int cmd_train(int argc, char **argv);

#endif
