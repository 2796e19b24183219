/* mine_fetch.c - `magiclens mine fetch` (placeholder until the stage lands). */
#include <stdio.h>

#include "mine.h"

int mine_fetch_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "magiclens mine fetch: not implemented yet\n");
    return 1;
}
