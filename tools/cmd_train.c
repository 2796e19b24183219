/* cmd_train.c - `magiclens train` (placeholder until the trainer lands). */
#include <stdio.h>

#include "cli.h"

int cmd_train(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "magiclens train: not implemented yet\n");
    return 1;
}
