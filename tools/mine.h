/* mine.h - the `magiclens mine` stages (tools/mine_*.c), each reading the
 * previous stage's output so that stages can run on different machines:
 *
 *   pages    WARC files        -> pages.jsonl   (one page, its cleaned image group)
 *   fetch    pages.jsonl       -> shards/       (downloaded, decoded, deduplicated images)
 *   pairs    shards/ + model   -> pairs.jsonl   (scored image pairs inside each page)
 *   instruct pairs.jsonl + LLM -> triplets.jsonl (query image, instruction, target image)
 *
 * Each takes argv with argv[0] = the stage name and returns the exit status. */
#ifndef ML_TOOLS_MINE_H
#define ML_TOOLS_MINE_H

int mine_pages_main(int argc, char **argv);
int mine_fetch_main(int argc, char **argv);
int mine_pairs_main(int argc, char **argv);
int mine_instruct_main(int argc, char **argv);

#endif
