/* fileio.c - durable file writes. */
#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

char *ml_dir_of(const char *path) {
    char *dir = strdup(path);
    if (!dir) return NULL;
    char *slash = strrchr(dir, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == dir) slash[1] = 0;
    else *slash = 0;
    return dir;
}

static int sync_parent(const char *path, ml_error *err) {
    char *dir = ml_dir_of(path);
    if (!dir) return ml_fail(err, "out of memory");
    int rc = ml_fsync_dir(dir, err);
    free(dir);
    return rc;
}

int ml_finish_tmp(FILE *f, const char *tmp, const char *out, ml_error *err) {
    int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    if (fclose(f) != 0 || bad) return ml_fail(err, "%s: write failed: %s", tmp, strerror(errno));
    if (rename(tmp, out) != 0) return ml_fail(err, "%s: rename failed: %s", out, strerror(errno));
    return sync_parent(out, err);
}

/* Durability of a rename or a new file needs the directory synced too. */
int ml_fsync_dir(const char *dir, ml_error *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return ml_fail(err, "%s: cannot open folder: %s", dir, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? 0 : ml_fail(err, "%s: fsync: %s", dir, strerror(errno));
}

/* Writes `len` bytes to `path` atomically: path.tmp, fsync, rename, fsync dir. */
int ml_write_atomic(const char *path, const void *data, size_t len,
                        ml_error *err) {
    size_t n = strlen(path) + 5;
    char *tmp = malloc(n);
    if (!tmp) return ml_fail(err, "out of memory");
    snprintf(tmp, n, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = -1;
    if (fd < 0) {
        ml_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        const uint8_t *p = data;
        size_t done = 0;
        while (done < len) {
            ssize_t w = write(fd, p + done, len - done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) break;
            done += (size_t)w;
        }
        if (done != len || fsync(fd) != 0)
            ml_fail(err, "%s: write failed: %s", tmp, strerror(errno));
        else if (rename(tmp, path) != 0)
            ml_fail(err, "%s: rename failed: %s", path, strerror(errno));
        else
            rc = sync_parent(path, err);
        close(fd);
        if (rc != 0) unlink(tmp);
    }
    free(tmp);
    return rc;
}


int ml_read_all(const char *path, size_t max, unsigned char **data, size_t *len, ml_error *err) {
    *data = NULL, *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return ml_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || (size_t)st.st_size > max) {
        fclose(f);
        return ml_fail(err, "%s: larger than %zu bytes", path, max);
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    size_t got = buf ? fread(buf, 1, n, f) : 0;
    fclose(f);
    if (!buf || got != n) {
        free(buf);
        return ml_fail(err, "%s: read failed", path);
    }
    *data = buf, *len = n;
    return 0;
}
