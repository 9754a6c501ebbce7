# farm -- build, test and benchmark.
#
#   make            build build/farm, build/libfarm.{a,so} and build/farm.so (the Lua module)
#   make test       install what is missing, build, and run every test (TAP through prove),
#                   plainly, then the fuzzers briefly, then every test under the sanitizers
#   make demo       install what is missing, build, and run examples/pi.lua on the local pool
#   make bench      print the benchmark figures
#   make asan       build and test under AddressSanitizer and UBSan (build-asan/)
#   make fuzz       build the fuzzers (value decoder, what a worker sends the engine, the
#                   JOBS and TAKE messages a worker reads, the node's side of the
#                   handshake) with libFuzzer (clang)

MAKEFLAGS += --no-print-directory
CC      ?= cc
B       ?= build
PKGS     = lua5.4 nanomsg libsodium libssh2
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -fPIC -Iinclude -Icore -I$(B) \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS_NOLUA = $(shell pkg-config --libs nanomsg libsodium libssh2 2>/dev/null) -lpthread -lm -ldl
LIBS     = $(shell pkg-config --libs lua5.4 2>/dev/null) $(LIBS_NOLUA)

CORE_SRC = $(filter-out core/main.c core/cli.c,$(wildcard core/*.c))
CORE_OBJ = $(CORE_SRC:core/%.c=$(B)/obj/%.o) $(B)/obj/luasrc.o
LUA_SRC  = $(wildcard lua/*.lua)
CTEST_SRC = $(wildcard spec/c/*.c)
CTESTS   = $(CTEST_SRC:spec/c/%.c=$(B)/tests/%)

all: $(B)/farm $(B)/libfarm.a $(B)/libfarm.so $(B)/farm.so $(B)/farm.pc $(CTESTS)

deps:
	@scripts/deps.sh

$(B)/obj/%.o: core/%.c $(wildcard core/*.h) include/farm.h | $(B)/obj
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/luasrc.c: $(LUA_SRC) scripts/embed.lua | $(B)/obj
	lua5.4 scripts/embed.lua $@ $(LUA_SRC)

$(B)/obj/luasrc.o: $(B)/luasrc.c
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/libfarm.a: $(CORE_OBJ)
	rm -f $@ && ar rcs $@ $^

$(B)/libfarm.so: $(CORE_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -shared -o $@ $^ $(LIBS)

# The Lua module: not linked with liblua (the interpreter that loads it has Lua).
$(B)/farm.so: $(CORE_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -shared -o $@ $^ $(LIBS_NOLUA)

# -Wl,-E: Lua C modules that a job requires find the Lua API in the executable.
$(B)/obj/node.o: nodes/node.c $(wildcard core/*.h) include/farm.h | $(B)/obj
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/farm: $(B)/obj/main.o $(B)/obj/cli.o $(B)/obj/node.o $(CORE_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -Wl,-E -o $@ $^ $(LIBS)

$(B)/farm.pc: scripts/farm.pc.in
	sed -e 's|@PREFIX@|$(PREFIX)|' $< > $@

$(B)/tests/%: spec/c/%.c $(CORE_OBJ) | $(B)/tests
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(CORE_OBJ) $(LIBS)

$(B)/obj $(B)/tests:
	mkdir -p $@

PREFIX ?= /usr/local

# Every test, then every test again under AddressSanitizer, UBSan and LeakSanitizer.
test: deps
	$(MAKE) all
	scripts/test.sh $(B)
	$(MAKE) fuzz-smoke
	$(MAKE) asan

# Each fuzzer for FUZZ_SECONDS (a finding stops the run and fails the target).
FUZZ_SECONDS ?= 15
fuzz-smoke: fuzz
	@for f in decode results worker session; do \
	  build-fuzz/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -seed=1 >build-fuzz/fuzz_$$f.log 2>&1 \
	    || { tail -40 build-fuzz/fuzz_$$f.log; echo "fuzz_$$f: FINDING (see build-fuzz/)"; exit 1; }; \
	  echo "fuzz_$$f: $$(grep -o 'Done [0-9]* runs' build-fuzz/fuzz_$$f.log | head -1), no findings"; \
	done

demo: deps
	$(MAKE) all
	$(B)/farm run examples/pi.lua

bench: deps
	$(MAKE) all
	scripts/bench.sh $(B)

# The specs load build-asan/farm.so into Debian's (uninstrumented) lua5.4, so
# everything uses the shared ASan runtime, preloaded into lua5.4.
ASAN_RT = $(shell clang -print-file-name=libclang_rt.asan-x86_64.so 2>/dev/null)
asan: deps
	$(MAKE) B=build-asan CC=clang \
	  OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -shared-libasan" \
	  LDFLAGS="-Wl,-rpath,$(dir $(ASAN_RT))" all
	FARM_ASAN_RT=$(ASAN_RT) scripts/test.sh build-asan

fuzz: deps
	$(MAKE) B=build-fuzz CC=clang OPT="-O1 -g -fsanitize=fuzzer-no-link,address,undefined" all
	for f in decode results worker session; do \
	  clang -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude -Icore \
	    $$(pkg-config --cflags lua5.4) -o build-fuzz/fuzz_$$f spec/fuzz/fuzz_$$f.c \
	    $(filter-out %/luasrc.o,$(CORE_OBJ:$(B)/%=build-fuzz/%)) build-fuzz/obj/luasrc.o $(LIBS) || exit 1; \
	done

clean:
	rm -rf build build-asan build-fuzz

.PHONY: all deps test demo bench asan fuzz fuzz-smoke clean
