/* magiclens - command-line tool: dispatches to the commands (cli.h).  Each
 * command file parses its options, calls the library and prints.
 *
 *   magiclens embed / convert / tokenize / info / bench / cpu / vocab: cmd_embed.c, cmd_model.c
 *   magiclens index / search / export: cmd_index.c, cmd_export.c
 *   magiclens eval / serve / train / mine: cmd_eval.c, cmd_serve.c, cmd_train.c, cmd_mine.c
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/dist.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        cli_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    argv[1] = argv[0];
    argc--;
    argv++;
    if (!strcmp(cmd, "embed")) return cmd_embed(argc, argv);
    if (!strcmp(cmd, "convert")) return cmd_convert(argc, argv);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc, argv);
    if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc, argv);
    if (!strcmp(cmd, "cpu")) return cmd_cpu();
    if (!strcmp(cmd, "vocab")) return cmd_vocab(argc, argv);
    if (!strcmp(cmd, "export")) return cmd_export_index(argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc, argv);
    if (!strcmp(cmd, "serve")) return cmd_serve(argc, argv);
    if (!strcmp(cmd, "mine")) return cmd_mine(argc, argv);
    if (!strcmp(cmd, "index") || !strcmp(cmd, "search") || !strcmp(cmd, "train")) {
        if (ml_dist_init(&argc, &argv) != 0) {
            fprintf(stderr, "magiclens: started by mpirun, but MPI is not available (built "
                            "without OpenMPI?)\n");
            return 1;
        }
        int rc = !strcmp(cmd, "index")    ? cmd_index(argc, argv)
                 : !strcmp(cmd, "search") ? cmd_search(argc, argv)
                                          : cmd_train(argc, argv);
        /* One rank failing alone must not leave the others waiting. */
        if (ml_dist_size() > 1 && !ml_dist_all_true(rc == 0) && rc == 0) rc = 1;
        ml_dist_finalize();
        return rc;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("magiclens %s\n", ML_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        cli_usage(stdout);
        return 0;
    }
    fprintf(stderr, "magiclens: unknown command '%s'\n\n", cmd);
    cli_usage(stderr);
    return 2;
}
