// bench_faiss - the FAISS side of bench/search.md: the same vectors as
// bench_search (the .npy files it writes), the same thread count, the same
// measurements: build time, ms per query one at a time and in batches of
// 256, recall@10 against the exact float32 top-10 bench_search computed
// (gt_N_D.npy).
//
// Usage: bench_faiss [n=1000000] [d=512] [dir=/tmp/magiclens-bench] [threads=2] [hnsw]
// Run bench_search first (it writes the data and the ground truth).
// Debian's libfaiss-dev 1.7.3 ships only the static C++ library (no C API
// symbols), so this is C++; it links libfaiss.a, OpenMP, BLAS and LAPACK.
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexScalarQuantizer.h>
#include <omp.h>
#include <stdlib.h>
#include <time.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

static double now() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double load_now() {
    double l[1] = {0};
    return getloadavg(l, 1) == 1 ? l[0] : -1;
}

// Minimal reader for the C-order little-endian float32 2-D .npy files that
// src/io/npy.c writes.
static bool read_npy(const std::string &path, std::vector<float> &out, long &rows, long &cols) {
    FILE *f = fopen(path.c_str(), "rb");
    if (!f) return false;
    unsigned char pre[10];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) return fclose(f), false;
    size_t hl = pre[8] | (pre[9] << 8);
    if (pre[6] >= 2) { // version 2+: 4-byte header length
        unsigned char b[2];
        if (fread(b, 1, 2, f) != 2) return fclose(f), false;
        hl = hl | (size_t)b[0] << 16 | (size_t)b[1] << 24;
    }
    std::string h(hl, '\0');
    if (fread(&h[0], 1, hl, f) != hl || h.find("'<f4'") == std::string::npos) return fclose(f), false;
    size_t p = h.find("'shape': (");
    if (p == std::string::npos || sscanf(h.c_str() + p + 10, "%ld, %ld", &rows, &cols) != 2)
        return fclose(f), false;
    out.resize((size_t)rows * cols);
    bool ok = fread(out.data(), sizeof(float), out.size(), f) == out.size();
    fclose(f);
    return ok;
}

static const int K = 10;
using idx_t = faiss::Index::idx_t;

static double recall(const std::vector<idx_t> &got, const std::vector<float> &gt, int nq) {
    int hit = 0;
    for (int i = 0; i < nq; i++)
        for (int j = 0; j < K; j++)
            for (int t = 0; t < K; t++)
                if (got[(size_t)i * K + j] == (idx_t)gt[(size_t)i * K + t]) {
                    hit++;
                    break;
                }
    return (double)hit / ((double)nq * K);
}

// ms per query one at a time (`single` queries) and in batches of 256
// (best of 2 passes over `nb` batches); labels of all queried rows in I.
static void timed(faiss::Index &ix, const float *q, int d, int single, int nb, double &ms1,
                  double &msb, std::vector<idx_t> &I) {
    std::vector<float> D((size_t)1000 * K);
    ix.search(1, q, K, D.data(), I.data()); // warm-up
    double t0 = now();
    for (int i = 0; i < single; i++) ix.search(1, q + (size_t)i * d, K, D.data() + i * K, I.data() + i * K);
    ms1 = (now() - t0) * 1e3 / single;
    msb = 1e30;
    for (int pass = 0; pass < 2; pass++) {
        t0 = now();
        for (int b = 0; b < nb; b++)
            ix.search(256, q + (size_t)b * 256 * d, K, D.data() + (size_t)b * 256 * K,
                      I.data() + (size_t)b * 256 * K);
        msb = std::min(msb, (now() - t0) * 1e3 / (nb * 256.0));
    }
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000, d = argc > 2 ? atol(argv[2]) : 512;
    std::string dir = argc > 3 ? argv[3] : "/tmp/magiclens-bench";
    int threads = argc > 4 ? atoi(argv[4]) : 2;
    bool hnsw = argc > 5 && strcmp(argv[5], "hnsw") == 0;
    omp_set_num_threads(threads);
    std::vector<float> base, q, gt;
    long r, c, qr, qc, gr, gc;
    std::string bp = dir + "/base_" + std::to_string(n) + "_" + std::to_string(d) + ".npy";
    std::string qp = dir + "/queries_" + std::to_string(d) + ".npy";
    std::string gp = dir + "/gt_" + std::to_string(n) + "_" + std::to_string(d) + ".npy";
    if (!read_npy(bp, base, r, c) || r != n || c != d || !read_npy(qp, q, qr, qc) || qc != d ||
        !read_npy(gp, gt, gr, gc) || gc != K) {
        fprintf(stderr, "bench_faiss: run bench_search %ld %ld %s first (%s, %s, %s)\n", n, d,
                dir.c_str(), bp.c_str(), qp.c_str(), gp.c_str());
        return 1;
    }
    printf("bench_faiss: FAISS 1.7.3 (Debian libfaiss.a), n=%ld d=%ld threads=%d load=%.2f\n", n,
           d, threads, load_now());
    std::vector<idx_t> I((size_t)1000 * K);
    double ms1, msb;

    {
        faiss::IndexFlatIP flat(d);
        double t0 = now();
        flat.add(n, base.data());
        double build = now() - t0;
        timed(flat, q.data(), d, 10, 1, ms1, msb, I);
        printf("\n%-22s build %.2f s  1q %.2f ms  b256 %.3f ms/q  recall@10 %.4f  load %.2f\n",
               "IndexFlatIP", build, ms1, msb, recall(I, gt, 256), load_now());
    }

    int nlist = (int)std::lround(std::sqrt((double)n)); // as ml_ivf's default
    for (int sq = 0; sq < 2; sq++) {
        faiss::IndexFlatIP quant(d);
        faiss::IndexIVF *ivf;
        if (sq)
            ivf = new faiss::IndexIVFScalarQuantizer(&quant, d, nlist, faiss::ScalarQuantizer::QT_8bit,
                                                     faiss::METRIC_INNER_PRODUCT);
        else
            ivf = new faiss::IndexIVFFlat(&quant, d, nlist, faiss::METRIC_INNER_PRODUCT);
        ivf->cp.max_points_per_centroid = 64; // ml_ivf trains on 64 * nlist rows too
        ivf->cp.niter = 10;
        ivf->cp.seed = 1;
        double t0 = now();
        ivf->train(n, base.data());
        ivf->add(n, base.data());
        double build = now() - t0;
        const char *name = sq ? "IndexIVFScalarQuantizer SQ8" : "IndexIVFFlat";
        printf("\n%s nlist=%d: build %.1f s, load %.2f\n", name, nlist, build, load_now());
        printf("%-7s %10s %12s %12s %6s\n", "nprobe", "1q_ms", "b256_ms/q", "recall@10", "load");
        for (int np : {1, 2, 4, 8, 16, 32, 64}) {
            ivf->nprobe = np;
            timed(*ivf, q.data(), d, 200, 3, ms1, msb, I);
            printf("%-7d %10.3f %12.4f %12.4f %6.2f\n", np, ms1, msb, recall(I, gt, 768), load_now());
        }
        delete ivf;
    }

    if (hnsw) {
        faiss::IndexHNSWFlat h(d, 32, faiss::METRIC_INNER_PRODUCT);
        h.hnsw.efConstruction = 40;
        double t0 = now();
        h.add(n, base.data());
        printf("\nIndexHNSWFlat M=32 efConstruction=40: build %.1f s, load %.2f\n", now() - t0, load_now());
        for (int ef : {16, 32, 64, 128}) {
            h.hnsw.efSearch = ef;
            timed(h, q.data(), d, 200, 3, ms1, msb, I);
            printf("efSearch %-4d 1q %.3f ms  b256 %.4f ms/q  recall@10 %.4f  load %.2f\n", ef, ms1,
                   msb, recall(I, gt, 768), load_now());
        }
    }
    return 0;
}
