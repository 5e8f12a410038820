# moonforge — build, test, run.   `make run` and `make test` are the two commands a newcomer needs.
CC        ?= gcc
CFLAGS    ?= -std=c11 -O2 -Wall -Wextra
CUDA_HOME ?= /usr/local/cuda
LUA_INC   ?= /usr/include/lua5.4
LUA_LIB   ?= /usr/lib/x86_64-linux-gnu/liblua5.4.a
# OpenBLAS and Lua are linked statically so that bin/ built here also runs on the GPU machine.
STATIC_LIBS ?= -Wl,-Bstatic -lopenblas -lpcre2-8 -Wl,-Bdynamic -lpthread

RUNTIME_SRC := $(filter-out runtime/main.c,$(wildcard runtime/*.c))
RUNTIME_HDR := $(wildcard runtime/*.h)
# make run SPEC=specs/x.lua; empty: scripts/run.sh picks gpt2_124m on a GPU, gpt2_mini on the CPU
SPEC      ?=

.PHONY: all deps test test-gpu test-dist-gpu bench run sweep clean

UNIT_TESTS := bin/test_runtime_cpu bin/test_tokenizer bin/test_shards bin/test_prepare

all: bin/gen bin/runtime $(UNIT_TESTS)

deps:
	@scripts/deps.sh

bin/gen: gen/main.c
	@mkdir -p bin
	$(CC) $(CFLAGS) -I$(LUA_INC) $< -o $@ $(LUA_LIB) -ldl -lm

bin/runtime: runtime/main.c $(RUNTIME_SRC) $(RUNTIME_HDR)
	@mkdir -p bin
	$(CC) $(CFLAGS) -I$(CUDA_HOME)/include runtime/main.c $(RUNTIME_SRC) -o $@ $(STATIC_LIBS) -ldl -lm

# Each unit test links the runtime's objects (everything but main.c).
bin/test_%: tests/unit/test_%.c $(RUNTIME_SRC) $(RUNTIME_HDR)
	@mkdir -p bin
	$(CC) $(CFLAGS) -I$(CUDA_HOME)/include -Iruntime $< $(RUNTIME_SRC) -o $@ $(STATIC_LIBS) -ldl -lm

# The standalone kernel tests and attention benchmark (needs nvcc; runs on the GPU machine).
bin/test_kernels: tests/gpu/test_kernels.cu $(wildcard templates/*.cuh)
	@mkdir -p bin
	$(CUDA_HOME)/bin/nvcc -std=c++17 -O2 -arch=sm_90 -Itemplates $< -o $@
# the generalized attention kernels' tests and benchmark (bench/bench.sh runs it with --bench-only)
# (sm_90a: the wgmma kernels of attention_wg.cuh are arch-specific)
bin/test_attention_gen: tests/gpu/test_attention_gen.cu templates/common.cuh templates/attention.cuh templates/attention_gen.cuh templates/attention_wg.cuh
	@mkdir -p bin
	$(CUDA_HOME)/bin/nvcc -std=c++17 -O2 -gencode arch=compute_90a,code=sm_90a -Itemplates $< -o $@
bin/test_parscale: tests/gpu/test_parscale.cu templates/common.cuh templates/parscale.cuh
	@mkdir -p bin
	$(CUDA_HOME)/bin/nvcc -std=c++17 -O2 -arch=sm_90 -Itemplates $< -o $@

# The GPU kernel tests built for the CPU emulator (tests/gpu/emu: no GPU needed; tests/t_gpu_emu.sh
# runs their fast variants under `make test`). prep.py rewrites bin/emu/ (only files whose text changed).
EMU_CORE := templates/common.cuh $(wildcard tests/gpu/emu/*.h) tests/gpu/emu/prep.py
bin/test_attention_gen_emu: templates/attention.cuh templates/attention_gen.cuh templates/attention_wg.cuh
bin/test_parscale_emu: templates/parscale.cuh
bin/test_kernels_emu: $(wildcard templates/*.cuh)
bin/test_%_emu: tests/gpu/test_%.cu $(EMU_CORE)
	@mkdir -p bin/emu
	python3 tests/gpu/emu/prep.py bin/emu
	g++ -std=c++17 -O1 -w -I$(CUDA_HOME)/include -Itests/gpu/emu -Ibin/emu bin/emu/test_$*_emu.cpp -o $@

# The decode attention kernel (templates/decode.cuh) against the CPU op it must equal
# (runtime/cpu_ops.c, linked in): on the GPU, and in the CPU emulator (tests/gpu/emu; make test runs it).
DECODE_TEST_DEPS := tests/gpu/test_decode.cu templates/common.cuh templates/decode.cuh runtime/cpu_ops.c \
                    runtime/cpu_ops.h runtime/util.c runtime/util.h
bin/obj/%.o: runtime/%.c $(RUNTIME_HDR)
	@mkdir -p bin/obj
	$(CC) $(CFLAGS) -c $< -o $@

bin/test_decode: $(DECODE_TEST_DEPS) bin/obj/cpu_ops.o bin/obj/util.o
	$(CUDA_HOME)/bin/nvcc -std=c++17 -O2 -arch=sm_90 -Itemplates -Iruntime $< bin/obj/cpu_ops.o bin/obj/util.o -o $@ \
	  -Xlinker -Bstatic -lopenblas -Xlinker -Bdynamic -lpthread -lm

bin/test_decode_emu: $(DECODE_TEST_DEPS) bin/obj/cpu_ops.o bin/obj/util.o $(wildcard tests/gpu/emu/*)
	python3 tests/gpu/emu/prep.py bin/emu
	g++ -std=c++17 -O1 -w -I$(CUDA_HOME)/include -Itests/gpu/emu -Ibin/emu -Iruntime bin/emu/test_decode_emu.cpp \
	  bin/obj/cpu_ops.o bin/obj/util.o -o $@ $(STATIC_LIBS) -lm

# Every test that needs no GPU; the last line is "N passed, M failed".
test: deps all
	@tests/run.sh

# On the GPU machine (bin/ built here and carried, or built there).
test-gpu: all
	@tests/run_gpu.sh

# Several GPUs (at least 2) on the GPU machine: data parallel, ZeRO-1, launchers, failures, speed.
test-dist-gpu: all
	@tests/run_dist_gpu.sh

bench: all
	@bench/bench.sh

run: deps all
	@scripts/run.sh $(SPEC)

# A sweep (specs/sweeps/$(SWEEP).lua, README.md "Sweeps"): one program per point, the unfinished
# points trained (CPU=1: on the CPU; several GPUs: one point per GPU), then out/$(SWEEP)/summary.csv,
# summary.md and loss.png. SET="train.steps=50 ..." adds overrides to every point.
sweep: deps all
	@test -n "$(SWEEP)" || { echo "usage: make sweep SWEEP=name [CPU=1] [SET=\"k=v ...\"]  (sweeps: $(notdir $(basename $(wildcard specs/sweeps/*.lua))))"; exit 2; }
	@scripts/sweep.sh $(SWEEP) $(if $(CPU),--cpu) $(foreach s,$(SET),--set $(s))

clean:
	rm -rf bin out out.failed
