# farm -- build, test and benchmark.
#
#   make            build build/farm, build/libfarm.{a,so} and build/farm.so (the Lua module)
#   make test       install what is missing, build, and run every test (TAP through prove),
#                   plainly, then the fuzzers briefly, then every test under the sanitizers
#   make demo       install what is missing, build, and run examples/pi.lua on the local pool
#   make bench      print the benchmark figures, and issue 19's targets against
#                   them (also as build/bench.json)
#   make bench-peers  farm against luaproc and Lua Lanes, where the peers are built
#   make asan       build and test under AddressSanitizer and UBSan (build-asan/)
#   make tsan       build under ThreadSanitizer (build-tsan/) and run the C engine test and
#                   the C API test: the first race reported fails the run
#   make mutate     the mutation run (scripts/mutate.sh): each bug of spec/mutants.txt put
#                   into a scratch copy alone, built, and its tests run; prints caught or
#                   survived for each, and the score (not part of make test: ~15 minutes)
#   make fuzz       build the fuzzers (value decoder, what a worker sends the engine, the
#                   JOBS and TAKE messages a worker reads, the node's side of the
#                   handshake, every message's reader and writer, a node's announcement)
#                   with libFuzzer (clang)

MAKEFLAGS += --no-print-directory
CC      ?= cc
B       ?= build
PKGS     = lua5.4 nanomsg libsodium libssh2
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -fPIC -I$(B)/include -Iinclude -Icore -I$(B) \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# libssh2 (ssh.c) and libedit (repl.c, `farm repl`, the executable alone) are not
# linked: only their headers are used here, and each is loaded (dlopen) when first
# needed: the processes that use neither (every worker, most clients) start without
# them and OpenSSL's libcrypto and ncurses' libtinfo under them. libmicrohttpd
# (status.c, --status) likewise: only a process serving a status page maps it and
# the GnuTLS libraries under it.
LIBS_NOLUA = $(shell pkg-config --libs nanomsg libsodium 2>/dev/null) -lpthread -lm -ldl
LIBS     = $(shell pkg-config --libs lua5.4 2>/dev/null) $(LIBS_NOLUA)

# farm's version, here and nowhere else: farm.h's FARM_VERSION (include/farm.h.in,
# written out as $(B)/include/farm.h), farm --version, farm._VERSION and the REPL's
# banner (both from farm.core.version, i.e. FARM_VERSION), farm.pc, the installed
# farm(1), and the shared library's file name libfarm.so.$(VERSION) and soname
# libfarm.so.<major>.
VERSION  = 0.2.0

CORE_SRC = $(filter-out core/main.c core/cli.c core/cliopts.c core/repl.c,$(wildcard core/*.c))
CORE_OBJ = $(CORE_SRC:core/%.c=$(B)/obj/%.o) $(B)/obj/luasrc.o
LUA_SRC  = $(wildcard lua/*.lua)
CTEST_SRC = $(wildcard spec/c/*.c)
CTESTS   = $(CTEST_SRC:spec/c/%.c=$(B)/tests/%)
# Peers written for the tests (a hostile node, ...): programs the specs start, not
# tests themselves, so they live in $(B)/peers and not in $(B)/tests.
PEER_SRC = $(wildcard spec/peers/*.c)
PEERS    = $(PEER_SRC:spec/peers/%.c=$(B)/peers/%)
# libfarm.so.$(SOVER), its soname libfarm.so.$(SOMAJOR)
SOVER    = $(VERSION)
SOMAJOR  = $(firstword $(subst ., ,$(VERSION)))
# only farm_* and luaopen_farm leave libfarm.so and farm.so
EXPORTS  = -Wl,--version-script=scripts/libfarm.map

all: $(B)/include/farm.h $(B)/farm $(B)/libfarm.a $(B)/libfarm.so $(B)/farm.so $(B)/farm.pc $(CTESTS) $(PEERS) \
     $(B)/examples/embed \
     $(B)/libfarmkernels.a $(B)/libfarmkernels.so

deps:
	@scripts/deps.sh

$(B)/obj/%.o: core/%.c $(wildcard core/*.h) $(B)/include/farm.h | $(B)/obj
	$(CC) $(CFLAGS) -c $< -o $@

# farm.h with the version written in. $(B)/version changes when VERSION does, and
# only then, so that what has the version in it is remade then and only then.
$(B)/include/farm.h: include/farm.h.in $(B)/version
	@mkdir -p $(@D)
	sed -e 's|@VERSION@|$(VERSION)|' $< > $@.tmp && mv $@.tmp $@

$(B)/version: FORCE
	@mkdir -p $(@D)
	@echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' > $@

$(B)/luasrc.c: $(LUA_SRC) scripts/embed.lua | $(B)/obj
	lua5.4 scripts/embed.lua $@ "$$(lua5.4 -v | cut -d' ' -f1,2)" $(LUA_SRC)

# The status page (core/status.c serves it as /), compiled in from its HTML.
$(B)/status_page.h: core/status_page.html scripts/embed_page.lua | $(B)/obj
	lua5.4 scripts/embed_page.lua $@ farm_status_page core/status_page.html

$(B)/obj/status.o: $(B)/status_page.h

$(B)/obj/luasrc.o: $(B)/luasrc.c
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/libfarm.a: $(CORE_OBJ)
	rm -f $@ && ar rcs $@ $^

$(B)/libfarm.so.$(SOVER): $(CORE_OBJ) scripts/libfarm.map
	$(CC) $(CFLAGS) $(LDFLAGS) -shared -Wl,-soname,libfarm.so.$(SOMAJOR) $(EXPORTS) \
	  -o $@ $(CORE_OBJ) $(LIBS)

$(B)/libfarm.so.$(SOMAJOR): $(B)/libfarm.so.$(SOVER)
	ln -sf libfarm.so.$(SOVER) $@

$(B)/libfarm.so: $(B)/libfarm.so.$(SOMAJOR)
	ln -sf libfarm.so.$(SOMAJOR) $@

# The compute kernels alone (core/kernels.c), without Lua: LuaJIT's ffi.load reads
# the .so, with ffi.cdef of core/kernels_decl.h. No fused multiply-add anywhere in
# them, so their floating-point results are the same on every machine.
$(B)/obj/kernels.o: CFLAGS += -ffp-contract=off
$(B)/obj/kernels.o $(B)/obj/lkernels.o: include/farm_kernels.h

$(B)/libfarmkernels.a: $(B)/obj/kernels.o
	rm -f $@ && ar rcs $@ $^

$(B)/libfarmkernels.so: $(B)/obj/kernels.o
	$(CC) $(CFLAGS) $(LDFLAGS) -shared -Wl,-soname,libfarmkernels.so -o $@ $^ $(shell pkg-config --libs libsodium 2>/dev/null) -lm

# The Lua module: not linked with liblua (the interpreter that loads it has Lua).
$(B)/farm.so: $(CORE_OBJ) scripts/libfarm.map
	$(CC) $(CFLAGS) $(LDFLAGS) -shared $(EXPORTS) -o $@ $(CORE_OBJ) $(LIBS_NOLUA)

# -Wl,-E: Lua C modules that a job requires find the Lua API in the executable.
$(B)/obj/node.o: nodes/node.c $(wildcard core/*.h) $(B)/include/farm.h | $(B)/obj
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/obj/repl.o: CFLAGS += $(shell pkg-config --cflags libedit 2>/dev/null)

$(B)/farm: $(B)/obj/main.o $(B)/obj/cli.o $(B)/obj/cliopts.o $(B)/obj/repl.o $(B)/obj/node.o $(CORE_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -Wl,-E -o $@ $^ $(LIBS)

$(B)/farm.pc: scripts/farm.pc.in $(B)/version
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' $< > $@

# A C host of farm.h, linked as a host would link it: against libfarm.so.
$(B)/examples/embed: examples/embed.c $(B)/include/farm.h $(B)/libfarm.so | $(B)/examples
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -L$(B) -lfarm -Wl,-rpath,'$$ORIGIN/..'

$(B)/tests/%: spec/c/%.c $(CORE_OBJ) | $(B)/tests
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(CORE_OBJ) $(LIBS)

$(B)/peers/%: spec/peers/%.c $(CORE_OBJ) | $(B)/peers
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(CORE_OBJ) $(LIBS)

$(B)/obj $(B)/tests $(B)/examples $(B)/peers:
	mkdir -p $@

PREFIX ?= /usr/local

# make install PREFIX=... [DESTDIR=...]: the command, the libraries (with their
# soname links), the headers, farm.pc, the Lua module where lua5.4's require
# looks (PREFIX/lib/lua/5.4) and farm(1); the kernel library and its headers
# when they are built. make uninstall removes exactly what install put there.
D         = $(DESTDIR)$(PREFIX)
LUA_CMOD  = lib/lua/5.4
KHEADERS  = $(if $(wildcard include/farm_kernels.h),include/farm_kernels.h \
              $(foreach h,$(shell sed -n 's/^\#include "\(.*\)"/\1/p' include/farm_kernels.h), \
                $(firstword $(wildcard include/$(h) core/$(h)))))
INSTALLED = $(sort bin/farm lib/libfarm.a lib/libfarm.so.$(SOVER) lib/libfarm.so.$(SOMAJOR) \
            lib/libfarm.so include/farm.h lib/pkgconfig/farm.pc $(LUA_CMOD)/farm.so \
            share/man/man1/farm.1 lib/libfarmkernels.a lib/libfarmkernels.so \
            include/farm_kernels.h $(addprefix include/,$(notdir $(KHEADERS))))

install: $(B)/include/farm.h $(B)/farm $(B)/libfarm.a $(B)/libfarm.so $(B)/farm.so
	install -d $(D)/bin $(D)/include $(D)/lib/pkgconfig $(D)/$(LUA_CMOD) $(D)/share/man/man1
	install -m 755 $(B)/farm $(D)/bin/farm
	install -m 644 $(B)/libfarm.a $(D)/lib/libfarm.a
	install -m 755 $(B)/libfarm.so.$(SOVER) $(D)/lib/libfarm.so.$(SOVER)
	ln -sf libfarm.so.$(SOVER) $(D)/lib/libfarm.so.$(SOMAJOR)
	ln -sf libfarm.so.$(SOMAJOR) $(D)/lib/libfarm.so
	install -m 644 $(B)/include/farm.h $(D)/include/farm.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' scripts/farm.pc.in \
	  > $(D)/lib/pkgconfig/farm.pc
	install -m 755 $(B)/farm.so $(D)/$(LUA_CMOD)/farm.so
	sed -e 's|^\(\.TH FARM 1 "[^"]*" "farm\)"|\1 $(VERSION)"|' scripts/farm.1 > $(D)/share/man/man1/farm.1
	chmod 644 $(D)/share/man/man1/farm.1
	$(if $(wildcard $(B)/libfarmkernels.a),install -m 644 $(B)/libfarmkernels.a $(D)/lib/)
	$(if $(wildcard $(B)/libfarmkernels.so),install -m 755 $(B)/libfarmkernels.so $(D)/lib/)
	$(if $(KHEADERS),install -m 644 $(KHEADERS) $(D)/include/)

uninstall:
	rm -f $(addprefix $(D)/,$(INSTALLED))

# make deb: $(B)/farm_VERSION_ARCH.deb, with dpkg's tools (scripts/deb/: the control
# file, copyright, changelog, and build.sh, which moves what make install put in a
# staging tree to Debian's places and builds the package). Not part of make test
# but through spec/deb_spec.lua, which installs and removes it (as root).
deb: $(B)/include/farm.h $(B)/farm $(B)/libfarm.a $(B)/libfarm.so $(B)/farm.so \
     $(B)/libfarmkernels.a $(B)/libfarmkernels.so
	rm -rf $(B)/deb $(B)/farm_*.deb
	$(MAKE) install PREFIX=/usr DESTDIR=$(abspath $(B))/deb/debian/farm >/dev/null
	B=$(B) VERSION=$(VERSION) SOVER=$(SOVER) SOMAJOR=$(SOMAJOR) CC=$(CC) sh scripts/deb/build.sh

# luarocks (scripts/farm-dev-1.rockspec): the Lua module and the farm command
# its workers run, into the rock's directories (luarocks deploys them).
rock: $(B)/farm $(B)/farm.so

rock-install: rock
	install -d $(INST_LIBDIR) $(INST_BINDIR)
	install -m 755 $(B)/farm.so $(INST_LIBDIR)/farm.so
	install -m 755 $(B)/farm $(INST_BINDIR)/farm

# Every test, then every test again under AddressSanitizer, UBSan and LeakSanitizer,
# then the engine's threads under ThreadSanitizer.
test: deps
	$(MAKE) all
	scripts/test.sh $(B)
	$(MAKE) fuzz-smoke
	$(MAKE) asan
	$(MAKE) tsan

# Mutants from spec/mutants.txt, one at a time, in a scratch copy of the tree
# (MUTATE_TIME: seconds per test file; IDS: only those mutants, shell patterns).
mutate: all
	scripts/mutate.sh $(IDS)

# Each fuzzer for FUZZ_SECONDS (a finding stops the run and fails the target).
FUZZ_SECONDS ?= 15
fuzz-smoke: fuzz
	@for f in decode results worker session proto announce; do \
	  build-fuzz/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -seed=1 >build-fuzz/fuzz_$$f.log 2>&1 \
	    || { tail -40 build-fuzz/fuzz_$$f.log; echo "fuzz_$$f: FINDING (see build-fuzz/)"; exit 1; }; \
	  echo "fuzz_$$f: $$(grep -o 'Done [0-9]* runs' build-fuzz/fuzz_$$f.log | head -1), no findings"; \
	done

demo: deps
	$(MAKE) all
	$(B)/farm run examples/pi.lua

bench: deps
	$(MAKE) all $(B)/bench_capi
	scripts/bench.sh $(B)

# farm against luaproc and Lua Lanes in one run (scripts/bench-peers.sh): only
# where the peers are built (LUAPEERS, the kit's README); never part of `make test`.
bench-peers: all
	scripts/bench-peers.sh $(B)

# bench.sh's C API figure (2 threads against 1), linked as a host links libfarm.
$(B)/bench_capi: scripts/bench_capi.c $(B)/include/farm.h $(B)/libfarm.so
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -L$(B) -lfarm -lpthread -Wl,-rpath,'$$ORIGIN'

# The specs load build-asan/farm.so into Debian's (uninstrumented) lua5.4, so
# everything uses the shared ASan runtime, preloaded into lua5.4.
ASAN_RT = $(shell clang -print-file-name=libclang_rt.asan-x86_64.so 2>/dev/null)
asan: deps
	$(MAKE) B=build-asan CC=clang \
	  OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -shared-libasan" \
	  LDFLAGS="-Wl,-rpath,$(dir $(ASAN_RT))" all
	FARM_ASAN_RT=$(ASAN_RT) scripts/test.sh build-asan

# The threads that meet in the engine (a caller's, the loop's, another caller
# closing the farm) under ThreadSanitizer: the C engine test and the C API test,
# their workers the TSan build's farm too. halt_on_error: a report ends the
# process with an error, so the test fails; no race is suppressed.
TSAN_TESTS = test_engine test_capi
tsan: deps
	$(MAKE) B=build-tsan CC=clang OPT="-O1 -g -fsanitize=thread -fno-omit-frame-pointer" \
	  build-tsan/farm $(TSAN_TESTS:%=build-tsan/tests/%)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 $(TSAN_OPTIONS)" \
	  scripts/test.sh build-tsan $(TSAN_TESTS:%=build-tsan/tests/%)

fuzz: deps
	$(MAKE) B=build-fuzz CC=clang OPT="-O1 -g -fsanitize=fuzzer-no-link,address,undefined" all
	for f in decode results worker session proto announce; do \
	  clang -O1 -g -fsanitize=fuzzer,address,undefined -Ibuild-fuzz/include -Iinclude -Icore \
	    $$(pkg-config --cflags lua5.4) -o build-fuzz/fuzz_$$f spec/fuzz/fuzz_$$f.c \
	    $(filter-out %/luasrc.o,$(CORE_OBJ:$(B)/%=build-fuzz/%)) build-fuzz/obj/luasrc.o $(LIBS) || exit 1; \
	done

clean:
	rm -rf build build-asan build-fuzz build-tsan

FORCE:

.PHONY: all deps test demo bench bench-peers asan tsan fuzz fuzz-smoke mutate clean install uninstall rock rock-install deb
