/* cli.h - what the command files of the magiclens tool share. */
#ifndef ML_TOOLS_CLI_H
#define ML_TOOLS_CLI_H

#include "magiclens.h"

/* Loads a model, printing the error; NULL on failure. */
ml_model *cli_load_model(const char *path, const char *vocab, int precision);
/* fp32|bf16|int8 -> ML_PRECISION_*, or -1 after printing an error. */
int cli_parse_precision(const char *s);

/* Parses `value` of option `opt` as a number in [lo, hi] (NaN and trailing
 * junk refused); on failure prints "magiclens CMD: OPT VALUE: expected ..."
 * and returns -1. */
int cli_number(const char *cmd, const char *opt, const char *value, double lo, double hi,
               double *out);

int cmd_index(int argc, char **argv);
int cmd_search(int argc, char **argv);
int cmd_export_index(int argc, char **argv);
int cmd_export_model(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_mine(int argc, char **argv);
int cmd_train(int argc, char **argv);

#endif
