# Benchmarks (never part of `make test`). Included by the top-level Makefile,
# whose variables (BUILD, CC, CFLAGS, LIB_OBJ, LIBS...) are used here.
#
#   make bench         ingest, HTTP ceiling (nginx), bare evhttp, apply, storage
#                      ceilings (SQLite; PostgreSQL if installed), sustained
#                      load, batch ingest, overload and
#                      1,000 waiting clients (Prefer: wait), 3 runs each ->
#                      bench/results.json (about 5 minutes)
#   make bench-scale   ingest and apply vs workers, frontends, connections and
#                      accounts -> bench/scale.json and docs/bench/*.png
#                      (about 7 minutes)
#   make bench-ceiling the reference programs only (sqlite_ceiling, pg_ceiling,
#                      http_floor)
#
# BENCH_ARGS / BENCH_SCALE_ARGS pass options to the drivers (--help lists them).

SQLITE_CEILING = $(BUILD)/sqlite_ceiling
HTTP_FLOOR     = $(BUILD)/http_floor
WAIT_HIST      = $(BUILD)/wait_hist
PG_CEILING     = $(BUILD)/pg_ceiling
# libpq (Debian's libpq-dev) keeps libpq-fe.h in a directory of its own.
BENCH_PQ_CFLAGS  = $(shell pkg-config --cflags libpq 2>/dev/null || echo -I/usr/include/postgresql)
BENCH_OUT     ?= bench
BENCH_ARGS    ?=
BENCH_SCALE_ARGS ?=

.PHONY: bench bench-scale bench-ceiling bench-deps

bench-deps:
	@sh tools/bench/deps.sh
	@sh tools/deps.sh libpq-dev

$(SQLITE_CEILING): $(call obj,tools/bench/sqlite_ceiling.c) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(HTTP_FLOOR): $(call obj,tools/bench/http_floor.c) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# Reads the commit-to-answer histogram of waiting requests from the shm.
$(WAIT_HIST): $(call obj,tools/bench/wait_hist.c) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# The naive PostgreSQL reference: libpq and libc only, nothing of txprocd.
$(call obj,tools/bench/pg_ceiling.c): CFLAGS += $(BENCH_PQ_CFLAGS)
$(PG_CEILING): $(call obj,tools/bench/pg_ceiling.c)
	$(CC) $(LDFLAGS) -o $@ $^ -lpq -lpthread

bench-ceiling: $(SQLITE_CEILING) $(PG_CEILING) $(HTTP_FLOOR)

bench: deps bench-deps
	@$(MAKE) --no-print-directory all bench-ceiling $(WAIT_HIST)
	$(PYTHON) tools/bench/bench.py --build $(BUILD) --out $(BENCH_OUT) $(BENCH_ARGS)

bench-scale: deps bench-deps
	@$(MAKE) --no-print-directory all bench-ceiling
	$(PYTHON) tools/bench/scale.py --build $(BUILD) --out $(BENCH_OUT) --charts docs/bench $(BENCH_SCALE_ARGS)
