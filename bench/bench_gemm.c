/* bench_gemm - GFLOP/s of ml_gemm on the shapes of a ViT-B/16 batch of 8. */
#include <stdio.h>
#include <stdlib.h>

#include "core/progress.h"
#include "kernels/gemm.h"
#include "magiclens.h"

int main(int argc, char **argv) {
    int shapes[][3] = {{1576, 2304, 768}, {1576, 768, 768}, {1576, 3072, 768}, {1576, 768, 3072}};
    if (argc > 1) ml_set_threads(atoi(argv[1]));
    for (int s = 0; s < 4; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = calloc((size_t)M * K, 4), *B = calloc((size_t)K * N, 4), *C = calloc((size_t)M * N, 4);
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)(i % 7) * 0.1f;
        for (size_t i = 0; i < (size_t)K * N; i++) B[i] = (float)(i % 5) * 0.1f;
        ml_gemm(M, N, K, A, K, B, N, NULL, C, N, 0);
        double t0 = ml_now();
        int reps = 3;
        for (int r = 0; r < reps; r++) ml_gemm(M, N, K, A, K, B, N, NULL, C, N, 0);
        double dt = (ml_now() - t0) / reps;
        printf("M=%d N=%d K=%d: %.1f ms, %.1f GFLOP/s\n", M, N, K, dt * 1e3, 2.0 * M * N * K / dt / 1e9);
        free(A), free(B), free(C);
    }
    return 0;
}
