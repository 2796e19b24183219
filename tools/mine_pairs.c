/* mine_pairs.c - `magiclens mine pairs` (placeholder until the stage lands). */
#include <stdio.h>

#include "mine.h"

int mine_pairs_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "magiclens mine pairs: not implemented yet\n");
    return 1;
}
