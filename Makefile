# flowrun -- see README.md. Targets: all test bench demo repl install clean.
PREFIX ?= /usr/local
CC ?= cc
PKGS = lua5.4 libcurl lua5.4-cjson libmicrohttpd sqlite3 zlib libpq
DEBS = lua5.4 liblua5.4-dev lua-cjson-dev libcurl4-openssl-dev \
       libmicrohttpd-dev libsqlite3-dev sqlite3 lua-busted pkg-config gcc make openssl \
       libedit-dev graphviz luarocks nginx-light tinyproxy zlib1g-dev \
       python3 python3-prometheus-client libpq-dev postgresql

WARN = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror
OPT ?= -O2 -g
# CFLAGS and LDFLAGS from the command line are added, not substituted.
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC $(WARN) $(OPT) \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(CFLAGS)
ALL_CFLAGS += -Iruntime
ALL_LDFLAGS = $(LDFLAGS)
# LuaRocks (flowrun-*.rockspec) passes where Lua and libcurl are, and how it
# links a module; without it pkg-config finds them.
ALL_CFLAGS += $(addprefix -I,$(filter-out /usr/include,$(LUA_INCDIR) $(CURL_INCDIR)))
LIBFLAG ?= -shared
# lua-cjson is linked statically: one binary, no runtime dependency on it.
CJSON = -l:liblua5.4-cjson.a
LIBS = $(CJSON) $(shell pkg-config --libs lua5.4 libcurl libmicrohttpd sqlite3 zlib libpq 2>/dev/null) -lpthread -lm
ifeq ($(SAN),1)
ALL_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer
ALL_LDFLAGS += -fsanitize=address,undefined
endif

B = build
# runtime/lib: the library. runtime/module: the Lua module's binding.
# runtime/cli: the flowrun command (run, host, repl, mock), a client of
# runtime/flowrun.h like any host.
LIB = base labels query freeze loop pool cookies rules runtime session pages call request response integrations auth \
      secrets json inspect snapshot \
      sandbox quota blocks journal store_sqlite store_pg wire
LIB_O = $(LIB:%=$(B)/lib/%.o) $(B)/modules.o
LUA_MODULES = $(sort $(wildcard lua/flowrun/*.lua))
CLI = main common limits run jsonl serve sessions test repl/main repl/term repl/sessions mock/server mock/routes
CLI_O = $(CLI:%=$(B)/cli/%.o)
# the REPL's line editing: libedit (BSD licence), not GNU readline (GPL)
EDIT_LIBS = $(shell pkg-config --libs libedit 2>/dev/null || echo -ledit)

SOVER = 0
SONAME = libflowrun.so.$(SOVER)
LIBDIR ?= $(PREFIX)/lib

all: $(B)/flowrun $(B)/libflowrun.a $(B)/$(SONAME) $(B)/flowrun.so $(B)/faultsrv \
     $(B)/embed_test $(B)/store_pg_test $(B)/pty.so $(B)/flowrun.1

# Each object lists the headers it includes in its .d file (-MMD -MP).
$(B)/%.o: runtime/%.c $(B)/.flags
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

# The library's objects hide their symbols: the shared objects export only
# what flowrun.h marks FLOWRUN_API (and flowrun.so only luaopen_flowrun).
$(LIB_O) $(B)/module/flowrun_lua.o: ALL_CFLAGS += -fvisibility=hidden

-include $(wildcard $(B)/*.d $(B)/*/*.d $(B)/*/*/*.d)

$(B):
	mkdir -p $(B)

# The Lua modules of lua/ are compiled into the library (scripts/embed.lua).
$(B)/modules.c: scripts/embed.lua $(LUA_MODULES) | $(B)
	lua5.4 scripts/embed.lua $@ $(LUA_MODULES)

$(B)/modules.o: $(B)/modules.c $(B)/.flags
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

# Rebuild everything when the flags change (make test SAN=1 after make).
$(B)/.flags: FORCE | $(B)
	@echo '$(ALL_CFLAGS) $(ALL_LDFLAGS)' | cmp -s - $@ \
	  || echo '$(ALL_CFLAGS) $(ALL_LDFLAGS)' > $@
FORCE:

$(B)/libflowrun.a: $(LIB_O)
	$(AR) rcs $@ $^

# The shared library, for hosts that link -lflowrun (pkg-config flowrun);
# lua-cjson's shared library, as for the Lua module (Debian's static one is
# not PIC), and Lua itself, which the host links too.
$(B)/$(SONAME): $(LIB_O)
	$(CC) $(ALL_LDFLAGS) -shared -Wl,-soname,$(SONAME) -o $@ $^ \
	  -llua5.4-cjson $(shell pkg-config --libs lua5.4 libcurl sqlite3 libpq) -lpthread -lm

# pkg-config's description of an installed flowrun (PREFIX, LIBDIR): made
# anew at each install, for the PREFIX of that install.
$(B)/flowrun.pc: FORCE | $(B)
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))' \
	  'includedir=$${prefix}/include' '' \
	  'Name: flowrun' 'Description: chat, game and automation flows in Lua that call HTTP APIs' \
	  "Version: $$(sed -n 's/^#define FLOWRUN_VERSION "\(.*\)"/\1/p' runtime/flowrun.h)" \
	  'Requires: lua5.4' 'Requires.private: libcurl sqlite3 libpq' \
	  'Libs: -L$${libdir} -lflowrun' 'Libs.private: -llua5.4-cjson -lpthread -lm' \
	  'Cflags: -I$${includedir}' > $@

# flowrun(1), made from what --help prints (one source for both).
$(B)/flowrun.1: $(B)/flowrun scripts/manpage.lua
	lua5.4 scripts/manpage.lua $(B)/flowrun > $@

# flowrun test runs the Lua module's binding in a Lua state of its own.
$(B)/flowrun: $(CLI_O) $(B)/module/flowrun_lua.o $(B)/libflowrun.a
	$(CC) $(ALL_LDFLAGS) -o $@ $(CLI_O) $(B)/module/flowrun_lua.o $(B)/libflowrun.a $(LIBS) $(EDIT_LIBS)

# The Lua module links libcurl and lua-cjson's shared library (Debian's
# static one is not PIC) but never liblua: the interpreter (Debian's lua5.4
# has Lua linked in) provides the Lua API, and two copies of Lua in one
# process would corrupt each other.
$(B)/flowrun.so: $(B)/module/flowrun_lua.o $(LIB_O) runtime/module/flowrun.map
	$(CC) $(ALL_LDFLAGS) $(LIBFLAG) -Wl,--version-script=runtime/module/flowrun.map \
	  -o $@ $(B)/module/flowrun_lua.o $(LIB_O) \
	  -llua5.4-cjson $(addprefix -L,$(CURL_LIBDIR)) $(shell pkg-config --libs libcurl sqlite3 libpq) -lm

# The library's allocations go through the test's failing allocator
# (EMBED_OOM): --wrap reaches the objects linked here, not libc or libcurl.
$(B)/embed_test: spec/embed_test.c $(B)/libflowrun.a runtime/flowrun.h $(B)/.flags
	$(CC) $(ALL_CFLAGS) -DEMBED_OOM -o $@ $< $(B)/libflowrun.a $(LIBS) $(ALL_LDFLAGS) \
	  -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup

# The PostgreSQL store's methods against a real server (spec/store_pg_spec.lua).
$(B)/store_pg_test: spec/store_pg_test.c $(B)/libflowrun.a runtime/lib/store.h $(B)/.flags
	$(CC) $(ALL_CFLAGS) -o $@ $< $(B)/libflowrun.a $(LIBS) $(ALL_LDFLAGS)

$(B)/faultsrv: spec/tools/faultsrv.c $(B)/.flags
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) -lpthread

# The specs' pseudo-terminal (spec/repl_spec.lua), a Lua module like flowrun.so.
$(B)/pty.so: spec/tools/pty.c $(B)/.flags
	$(CC) $(ALL_CFLAGS) -shared -o $@ $< $(ALL_LDFLAGS) -lutil

deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq $$missing >/dev/null; fi

# make test builds and runs every spec. It installs packages only through
# `make deps`, which runs apt-get only when `dpkg -s` finds one of DEBS
# missing: on a machine that has them all, nothing is installed.
test: deps
	$(MAKE) all $(BENCH_BIN)              # the bench programs too: an API change must not break them
	SAN=$(SAN) sh spec/run.sh

demo: deps
	$(MAKE) all
	sh scripts/demo/run.sh

repl: deps
	$(MAKE) all
	sh scripts/demo/run.sh repl

# DESTDIR stages the install (packagers); PREFIX is where it will live.
INSTALLED = bin/flowrun $(LIBDIR:$(PREFIX)/%=%)/libflowrun.a \
  $(LIBDIR:$(PREFIX)/%=%)/$(SONAME) $(LIBDIR:$(PREFIX)/%=%)/libflowrun.so \
  $(LIBDIR:$(PREFIX)/%=%)/pkgconfig/flowrun.pc include/flowrun.h lib/lua/5.4/flowrun.so \
  share/man/man1/flowrun.1 $(addprefix share/flowrun/meta/,$(META))
# the editor annotations (lua-language-server), under share/flowrun/meta
META = flow_globals.lua flowrun.lua flowrun/flow.lua

install: all $(B)/flowrun.pc
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LIBDIR)/pkgconfig \
	  $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/lua/5.4 \
	  $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 644 $(B)/flowrun.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 755 $(B)/flowrun $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(B)/libflowrun.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(B)/$(SONAME) $(DESTDIR)$(LIBDIR)/
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libflowrun.so
	install -m 644 $(B)/flowrun.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	install -m 644 runtime/flowrun.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(B)/flowrun.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/
	install -d $(DESTDIR)$(PREFIX)/share/flowrun/meta/flowrun
	for f in $(META); do install -m 644 lua/meta/$$f $(DESTDIR)$(PREFIX)/share/flowrun/meta/$$f || exit 1; done

# luarocks make: the module into the rock's lib directory (INST_LIBDIR),
# from where LuaRocks deploys it to its tree's lib/lua/5.4.
install-rock: $(B)/flowrun.so
	install -d $(INST_LIBDIR)
	install -m 755 $(B)/flowrun.so $(INST_LIBDIR)/

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/,$(INSTALLED))
	rmdir $(DESTDIR)$(PREFIX)/share/flowrun/meta/flowrun $(DESTDIR)$(PREFIX)/share/flowrun/meta \
	  $(DESTDIR)$(PREFIX)/share/flowrun 2>/dev/null || true

clean:
	rm -rf $(B)

# each mutation of spec/mutations/*.lua must make its spec fail
mutate: deps
	lua5.4 scripts/mutate.lua --jobs 2

.PHONY: all deps test demo repl install install-rock uninstall clean mutate FORCE

# make bench: the benchmark of the issue, against nginx on 127.0.0.1 (see
# bench/run.lua); installs nginx, wrk and valgrind first when they are missing.
BENCH_DEBS = nginx-light wrk valgrind
BENCH_BIN = $(patsubst %,$(B)/bench/%,timeit curl_easy curl_multi curl_socket idle inflight frame)

$(B)/bench:
	mkdir -p $@

$(B)/bench/timeit: bench/timeit.c $(B)/.flags | $(B)/bench
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS)

$(B)/bench/curl_easy $(B)/bench/curl_multi $(B)/bench/curl_socket: $(B)/bench/%: bench/%.c $(B)/.flags | $(B)/bench
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(shell pkg-config --libs libcurl)

$(B)/bench/idle $(B)/bench/inflight $(B)/bench/frame: $(B)/bench/%: bench/%.c bench/scratch.h $(B)/libflowrun.a runtime/flowrun.h $(B)/.flags | $(B)/bench
	$(CC) $(ALL_CFLAGS) -o $@ $< $(B)/libflowrun.a $(LIBS) $(ALL_LDFLAGS)

bench: deps
	@missing=""; for p in $(BENCH_DEBS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq $$missing >/dev/null; fi
	$(MAKE) $(B)/flowrun $(B)/faultsrv $(BENCH_BIN)
	lua5.4 bench/run.lua

.PHONY: bench
