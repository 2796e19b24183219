/* vocab.c - the CLIP vocabulary lookup (the order is in vocab.h). */
#include "io/vocab.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char ML_VOCAB_ORDER[] =
    "--vocab, $MAGICLENS_VOCAB, the copy in a .mlens model, models/" ML_VOCAB_FILE
    " of the repository, ../shared/assets/ beside it";

const char *ml_vocab_user_path(const char *explicit_path) {
    if (explicit_path && *explicit_path) return explicit_path;
    const char *env = getenv("MAGICLENS_VOCAB");
    return env && *env ? env : NULL;
}

/* Candidate repository roots: the running program's folder's parent and
 * grandparent (build/magiclens, build/tests/test_x), then ".". */
static int repo_roots(char roots[3][PATH_MAX]) {
    int n = 0;
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = 0;
        for (int up = 0; up < 2; up++) {
            char *slash = strrchr(exe, '/');
            if (!slash || slash == exe) break;
            *slash = 0; /* the folder holding exe, then its parent */
            char *parent = strrchr(exe, '/');
            if (!parent) break;
            size_t plen = parent == exe ? 1 : (size_t)(parent - exe);
            memcpy(roots[n], exe, plen);
            roots[n++][plen] = 0;
        }
    }
    strcpy(roots[n++], ".");
    return n;
}

static int try_path(char *out, size_t cap, const char *root, const char *rel) {
    int w = snprintf(out, cap, "%s/%s", strcmp(root, "/") ? root : "", rel);
    return w > 0 && (size_t)w < cap && access(out, R_OK) == 0;
}

int ml_vocab_search_files(char *out, size_t cap) {
    char roots[3][PATH_MAX];
    int n = repo_roots(roots);
    static const char *const rel[] = {"models/" ML_VOCAB_FILE, "../shared/assets/" ML_VOCAB_FILE};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < n; i++)
            if (try_path(out, cap, roots[i], rel[k])) return 0;
    return -1;
}

int ml_vocab_find(const char *explicit_path, char *out, size_t cap) {
    const char *user = ml_vocab_user_path(explicit_path);
    if (!user) return ml_vocab_search_files(out, cap);
    int w = snprintf(out, cap, "%s", user);
    return w >= 0 && (size_t)w < cap ? 0 : -1;
}
