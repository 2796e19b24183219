#include "core/dist.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#ifdef ML_HAVE_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_active = 0;

static int launched_by_mpirun(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_RANK") || getenv("PMIX_RANK");
}

int ml_dist_init(int *argc, char ***argv) {
#ifdef ML_HAVE_MPI
    if (!launched_by_mpirun()) return 0;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) return -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_active = 1;
#else
    (void)argc, (void)argv;
    if (launched_by_mpirun() && getenv("OMPI_COMM_WORLD_SIZE") &&
        atoi(getenv("OMPI_COMM_WORLD_SIZE")) > 1)
        return -1; /* several ranks but no MPI: refuse rather than duplicate work */
#endif
    return 0;
}

void ml_dist_finalize(void) {
#ifdef ML_HAVE_MPI
    if (g_active) MPI_Finalize();
#endif
    g_active = 0;
}

int ml_dist_rank(void) { return g_rank; }
int ml_dist_size(void) { return g_size; }
int ml_dist_active(void) { return g_active; }

void ml_dist_barrier(void) {
#ifdef ML_HAVE_MPI
    if (g_active) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

void ml_dist_abort(int code) {
#ifdef ML_HAVE_MPI
    if (g_active) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    exit(code);
}

void ml_dist_bcast(void *buf, size_t len, int root) {
#ifdef ML_HAVE_MPI
    if (g_active) MPI_Bcast(buf, (int)len, MPI_BYTE, root, MPI_COMM_WORLD);
#else
    (void)buf, (void)len, (void)root;
#endif
}

int ml_dist_all_true(int v) {
#ifdef ML_HAVE_MPI
    if (g_active) {
        int in = v != 0, out = 0;
        MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
        return out;
    }
#endif
    return v != 0;
}

int64_t ml_dist_sum(int64_t v) {
#ifdef ML_HAVE_MPI
    if (g_active) {
        long long in = v, out = 0;
        MPI_Allreduce(&in, &out, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
        return out;
    }
#endif
    return v;
}

uint64_t ml_dist_max_u64(uint64_t v) {
#ifdef ML_HAVE_MPI
    if (g_active) {
        unsigned long long in = v, out = 0;
        MPI_Allreduce(&in, &out, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
        return out;
    }
#endif
    return v;
}

int ml_dist_gather(const void *buf, size_t len, uint8_t **all, size_t *lens, ml_error *err) {
    *all = NULL;
#ifdef ML_HAVE_MPI
    if (g_active) {
        if (len > (size_t)0x7fffffff) return ml_fail(err, "gather: %zu bytes is too much", len);
        int n = (int)len, *counts = NULL, *displs = NULL, total = 0;
        uint8_t *out = NULL;
        if (g_rank == 0) {
            counts = calloc((size_t)g_size, sizeof *counts);
            displs = calloc((size_t)g_size, sizeof *displs);
        }
        MPI_Gather(&n, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (g_rank == 0) {
            for (int r = 0; r < g_size; r++) displs[r] = total, total += counts[r], lens[r] = (size_t)counts[r];
            out = malloc(total ? (size_t)total : 1);
        }
        MPI_Gatherv(buf, n, MPI_BYTE, out, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
        free(counts), free(displs);
        *all = out;
        return 0;
    }
#endif
    uint8_t *out = malloc(len ? len : 1);
    if (!out) return ml_fail(err, "out of memory");
    memcpy(out, buf, len);
    lens[0] = len;
    *all = out;
    return 0;
}

/* Allreduce in pieces: MPI counts are ints, a model's gradient may not be. */
void ml_dist_sum_f32(float *buf, size_t n) {
#ifdef ML_HAVE_MPI
    if (g_active) {
        const size_t piece = (size_t)1 << 28;
        for (size_t o = 0; o < n; o += piece) {
            int c = (int)(n - o < piece ? n - o : piece);
            MPI_Allreduce(MPI_IN_PLACE, buf + o, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
    }
#else
    (void)buf, (void)n;
#endif
}

int ml_dist_allgather_f32(const float *local, int n, float *all, int *counts, ml_error *err) {
#ifdef ML_HAVE_MPI
    if (g_active) {
        MPI_Allgather(&n, 1, MPI_INT, counts, 1, MPI_INT, MPI_COMM_WORLD);
        int *displs = calloc((size_t)g_size, sizeof *displs);
        if (!displs) return ml_fail(err, "out of memory");
        long long total = 0;
        for (int r = 0; r < g_size; r++) {
            displs[r] = (int)total;
            total += counts[r];
        }
        if (total > 0x7fffffffLL) {
            free(displs);
            return ml_fail(err, "allgather: %lld values is too much", total);
        }
        MPI_Allgatherv(local, n, MPI_FLOAT, all, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
        free(displs);
        return 0;
    }
#endif
    (void)err;
    counts[0] = n;
    if (n > 0 && all != local) memmove(all, local, (size_t)n * sizeof(float));
    return 0;
}
