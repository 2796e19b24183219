/* mine_instruct.c - `magiclens mine instruct` (placeholder until the stage lands). */
#include <stdio.h>

#include "mine.h"

int mine_instruct_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "magiclens mine instruct: not implemented yet\n");
    return 1;
}
