#define _POSIX_C_SOURCE 200809L
#include "core/mem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

void *ml_malloc(size_t n, ml_error *err) {
    void *p = malloc(n ? n : 1);
    if (!p) ml_fail(err, "out of memory allocating %zu bytes", n);
    return p;
}

void *ml_calloc(size_t count, size_t size, ml_error *err) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) ml_fail(err, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *ml_aligned_alloc(size_t n, ml_error *err) {
    void *p = NULL;
    if (n > SIZE_MAX - ML_ALIGN) { /* the rounding below would wrap to a tiny size */
        ml_fail(err, "out of memory allocating %zu aligned bytes", n);
        return NULL;
    }
    size_t rounded = (n + ML_ALIGN - 1) / ML_ALIGN * ML_ALIGN;
    if (posix_memalign(&p, ML_ALIGN, rounded ? rounded : ML_ALIGN) != 0) {
        ml_fail(err, "out of memory allocating %zu aligned bytes", n);
        return NULL;
    }
    return p;
}

int ml_file_map_open(const char *path, ml_file_map *out, ml_error *err) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ml_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ml_fail(err, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ml_fail(err, "%s: not a regular file", path);
    }
    out->size = (size_t)st.st_size;
    if (out->size == 0) {
        close(fd);
        out->data = (const uint8_t *)"";
        return 0;
    }
    void *p = mmap(NULL, out->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return ml_fail(err, "%s: cannot map: %s", path, strerror(errno));
    out->data = p;
    out->mapped = 1;
    return 0;
}

void ml_file_map_close(ml_file_map *m) {
    if (!m || !m->data) return;
    if (m->mapped)
        munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}
