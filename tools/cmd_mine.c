/* cmd_mine.c - `magiclens mine STAGE ...`: dispatch to the stages (mine.h). */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "mine.h"

static void mine_usage(FILE *f) {
    fprintf(f, "usage: magiclens mine STAGE [options]   (STAGE --help for its options)\n"
               "  pages     --warc FILE.warc[.gz]... --output pages.jsonl\n"
               "  fetch     --pages pages.jsonl --output shards/\n"
               "  pairs     --shards shards/ --model M --output pairs.jsonl\n"
               "  instruct  --pairs pairs.jsonl (--llm-url URL --llm-model NAME | --no-llm)"
               " --output triplets.jsonl\n");
}

int cmd_mine(int argc, char **argv) {
    if (argc < 2) {
        mine_usage(stderr);
        return 2;
    }
    const char *stage = argv[1];
    argv++;
    argc--;
    if (!strcmp(stage, "pages")) return mine_pages_main(argc, argv);
    if (!strcmp(stage, "fetch")) return mine_fetch_main(argc, argv);
    if (!strcmp(stage, "pairs")) return mine_pairs_main(argc, argv);
    if (!strcmp(stage, "instruct")) return mine_instruct_main(argc, argv);
    if (!strcmp(stage, "--help") || !strcmp(stage, "-h") || !strcmp(stage, "help")) {
        mine_usage(stdout);
        return 0;
    }
    fprintf(stderr, "magiclens mine: unknown stage '%s'\n", stage);
    mine_usage(stderr);
    return 2;
}
