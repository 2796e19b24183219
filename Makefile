# magiclens - build with `make`; `make test` runs the whole suite.
# Sources are found by wildcard: a new .c file under src/ joins the library,
# a tests/unit/test_*.c file becomes a unit-test binary.

# ARM64 cross-build (docs/arm64.md): `make ARCH=aarch64` builds everything
# into build-aarch64/ with Debian's aarch64-linux-gnu-gcc against the
# multiarch :arm64 libraries (scripts/install-deps.sh --aarch64).
ifeq ($(ARCH),aarch64)
CC       = aarch64-linux-gnu-gcc
BUILD   ?= build-aarch64
PKG_CONFIG ?= PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig pkg-config
endif
PKG_CONFIG ?= pkg-config
BUILD   ?= build
CC      ?= cc
OPT     ?= -O2
SAN     ?=
CFLAGS  ?= $(OPT) -g
WARN     = -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CPPFLAGS = -Iinclude -Isrc -D_GNU_SOURCE
ALLFLAGS = -std=c11 $(WARN) $(CFLAGS) $(SAN) -pthread -fPIC
# MPI (OpenMPI) is optional at build time: without it `mpirun -n K` support
# is compiled out and every command runs as one process.
MPI_PKG := $(shell $(PKG_CONFIG) --exists ompi-c 2>/dev/null && echo ompi-c)
PKGS     = libpng libwebp libutf8proc zlib jansson libxxhash libarchive libmicrohttpd libcurl libxml-2.0 libbrotlidec msgpack $(MPI_PKG)
LDLIBS   = $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null || echo -lpng16 -lwebp -lutf8proc -lz -ljansson -lxxhash -larchive -lmicrohttpd -lcurl -lxml2 -lbrotlidec -lmsgpackc) -ljpeg -lgif -lm
PKGCFLAGS = $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null) $(if $(MPI_PKG),-DML_HAVE_MPI)

LIB_SRC  = $(sort $(shell find src -name '*.c'))
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
TEST_SRC = $(sort $(wildcard tests/unit/test_*.c))
TEST_BIN = $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all lib test test-asan run clean deps fuzz bench bench-search bench-faiss check-arm64 test-aarch64
all: $(BUILD)/magiclens $(TEST_BIN)

lib: $(BUILD)/libmagiclens.a

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) $(CPPFLAGS) $(PKGCFLAGS) -MMD -MP -c $< -o $@

# The compute kernels are worth the extra optimisation (vectorisation).
$(BUILD)/obj/src/kernels/%.o: OPT = -O3

# Low-precision kernels: only these files get the ISA flags (they run after
# run-time detection); the rest of the binary stays baseline x86-64.
ifneq ($(filter x86_64%,$(shell $(CC) -dumpmachine)),)
QG_AVX512 = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mavx512vnni -mfma
$(BUILD)/obj/src/kernels/qgemm_avx512.o: ALLFLAGS += $(QG_AVX512)
$(BUILD)/obj/src/kernels/qgemm_amx.o: ALLFLAGS += $(QG_AVX512) -mamx-tile -mamx-bf16 -mamx-int8
# AVX2 (and AVX-VNNI on ymm) low-precision kernels for CPUs without AVX-512 VNNI / BF16.
$(BUILD)/obj/src/kernels/qgemm_avx2.o: ALLFLAGS += -mavx2 -mfma
$(BUILD)/obj/src/kernels/qgemm_avxvnni.o: ALLFLAGS += -mavx2 -mfma -mavxvnni
# bf16 attention on AMX tiles (attention.c calls it only when the ISA is AMX).
$(BUILD)/obj/src/kernels/attention_amx.o: ALLFLAGS += $(QG_AVX512) -mamx-tile -mamx-bf16
endif

# SIMD kernels: only these files get -m flags (cpu.c picks them at run time),
# so the rest of the binary runs on any x86-64.  Other machines build them
# as empty files and use the scalar path.
ifneq ($(filter x86_64%,$(shell $(CC) -dumpmachine)),)
ML_AVX2_OBJ = $(addprefix $(BUILD)/obj/src/kernels/,gemm_avx2.o ops_avx2.o)
ML_AVX512_OBJ = $(addprefix $(BUILD)/obj/src/kernels/,gemm_avx512.o ops_avx512.o)
$(ML_AVX2_OBJ): ALLFLAGS += -mavx2 -mfma
$(ML_AVX512_OBJ): ALLFLAGS += -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma
# Vector-search scoring kernels (src/index/search.c picks them at run time).
$(BUILD)/obj/src/index/search_avx2.o: ALLFLAGS += -mavx2 -mfma -mf16c
$(BUILD)/obj/src/index/search_avx512.o: ALLFLAGS += -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx2 -mfma -mf16c
$(BUILD)/obj/src/index/search_amx.o: ALLFLAGS += $(QG_AVX512) -mamx-tile -mamx-int8
endif
# aarch64: Advanced SIMD is baseline (gemm/ops/preprocess/search _neon.c need
# no flags); the files using the optional dotprod / i8mm / bf16 instructions
# get them here and run only after cpu.c has seen them in AT_HWCAP(2).
ifneq ($(filter aarch64%,$(shell $(CC) -dumpmachine)),)
$(BUILD)/obj/src/kernels/qgemm_dotprod.o $(BUILD)/obj/src/index/search_dotprod.o: ALLFLAGS += -march=armv8.2-a+dotprod
$(BUILD)/obj/src/kernels/qgemm_i8mm.o: ALLFLAGS += -march=armv8.2-a+dotprod+i8mm
$(BUILD)/obj/src/kernels/qgemm_bf16.o: ALLFLAGS += -march=armv8.2-a+bf16
endif
$(BUILD)/obj/src/index/search.o: OPT = -O3
$(BUILD)/obj/src/index/search_%.o: OPT = -O3

# Image resampling (preprocess.c, portable) and its SIMD versions, chosen
# at run time like the kernels above.
ML_PRE_OBJ = $(addprefix $(BUILD)/obj/src/model/,preprocess.o preprocess_avx2.o preprocess_avx512.o preprocess_neon.o)
$(ML_PRE_OBJ): OPT = -O3
ifneq ($(filter x86_64%,$(shell $(CC) -dumpmachine)),)
$(BUILD)/obj/src/model/preprocess_avx2.o: ALLFLAGS += -mavx2 -mfma
$(BUILD)/obj/src/model/preprocess_avx512.o: ALLFLAGS += -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma
endif

$(BUILD)/libmagiclens.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

TOOL_OBJ = $(patsubst %.c,$(BUILD)/obj/%.o,$(sort $(wildcard tools/*.c)))
$(BUILD)/magiclens: $(TOOL_OBJ) $(BUILD)/libmagiclens.a
	$(CC) $(ALLFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libmagiclens.a
	@mkdir -p $(dir $@)
	$(CC) $(ALLFLAGS) -o $@ $^ $(LDLIBS)

# GEMM GFLOP/s vs the FMA peak: `make bench`, then
# MAGICLENS_ISA=avx2 $(BUILD)/bench_gemm [threads [reps]].
# Vector search (bench/search.md): $(BUILD)/bench_search [n [d [dir [all|exact|ivf]]]].
bench: $(BUILD)/bench_gemm $(BUILD)/bench_qgemm $(BUILD)/bench_search
$(BUILD)/bench_%: $(BUILD)/obj/bench/bench_%.o $(BUILD)/libmagiclens.a
	$(CC) $(ALLFLAGS) -o $@ $^ $(LDLIBS)

# FAISS on the vectors bench_search writes (bench/search.md): C++ against
# Debian's static libfaiss (libfaiss-dev, with libblas-dev, liblapack-dev and
# OpenMP from g++).  Separate from `bench` so that builds without FAISS work.
bench-search: $(BUILD)/bench_search
bench-faiss: $(BUILD)/bench_faiss
$(BUILD)/bench_faiss: bench/bench_faiss.cpp
	@test -f /usr/include/faiss/IndexFlat.h || { echo "bench-faiss needs FAISS: scripts/install-deps.sh --bench" >&2; exit 1; }
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 -O2 -g -fopenmp -Wall -Wextra -Werror -o $@ $< -lfaiss -lblas -llapack

deps:
	bash scripts/install-deps.sh

# The README's test command.  Installs missing packages, builds, runs everything.
test: deps
	$(MAKE) all
	BUILD=$(BUILD) bash tests/run.sh

# Same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	$(MAKE) all BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
	BUILD=build-asan ML_SKIP_SLOW=1 ASAN_OPTIONS=detect_leaks=1 bash tests/run.sh

# libFuzzer targets for the parsers (clang): the library is built once with
# coverage instrumentation (keeping the per-file ISA flags), then each
# fuzz/fuzz_*.c is linked against it.
FUZZ_SRC = $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_BIN = $(FUZZ_SRC:fuzz/%.c=build-fuzz/%)
FUZZ_SAN = -fsanitize=address,undefined -fno-omit-frame-pointer
fuzz:
	$(MAKE) build-fuzz/lib/libmagiclens.a BUILD=build-fuzz/lib CC=clang OPT=-O1 SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link"
	$(MAKE) $(FUZZ_BIN)
	@# fuzz_warc's seeds are generated (small synthetic WARC/ARC files), never
	@# copies of real crawls: build-fuzz/corpus/warc
	mkdir -p build-fuzz/corpus/warc build-fuzz/warc-gen
	/usr/bin/python3 tests/reference/make_warc.py build-fuzz/warc-gen > /dev/null
	cp build-fuzz/warc-gen/t2.warc build-fuzz/warc-gen/t3.warc.gz build-fuzz/warc-gen/t4.arc build-fuzz/corpus/warc/
build-fuzz/%: fuzz/%.c build-fuzz/lib/libmagiclens.a
	clang -std=c11 -g -O1 $(FUZZ_SAN) -fsanitize=fuzzer $(CPPFLAGS) $(PKGCFLAGS) -o $@ $< build-fuzz/lib/libmagiclens.a $(LDLIBS) -pthread

# The main job: install, build, fetch the model if absent, run it.
run: deps
	$(MAKE) all
	bash scripts/run-main.sh

# Compile-only check of the portable path for ARM64 (needs gcc-aarch64-linux-gnu).
check-arm64:
	bash scripts/check-arm64.sh

# Kernel unit tests and tiny-model parity tests of the aarch64 build under
# qemu-aarch64, at each emulated CPU level (scripts/test-aarch64.sh).
test-aarch64:
	$(MAKE) all ARCH=aarch64
	BUILD=build-aarch64 bash scripts/test-aarch64.sh

clean:
	rm -rf build build-asan build-fuzz build-aarch64

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
