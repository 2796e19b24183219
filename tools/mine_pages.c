/* mine_pages.c - `magiclens mine pages` (placeholder until the stage lands). */
#include <stdio.h>

#include "mine.h"

int mine_pages_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "magiclens mine pages: not implemented yet\n");
    return 1;
}
