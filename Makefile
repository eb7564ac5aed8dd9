# txprocd build. `make run` and `make test` do all the set-up themselves,
# including missing Debian packages (tools/deps.sh).
#
#   make            build everything into build/ (build-san/ with SAN=1)
#   make run        seed a demo users.db if missing and serve 127.0.0.1:8000
#   make run-pg     the same on a local throwaway PostgreSQL (tools/pg/pg.mk)
#   make test       unit tests (C) + integration tests (pytest, real binary) on
#                   both ledger backends (SQLite, and a PostgreSQL the tests start)
#   make test SAN=1 the same under AddressSanitizer + UndefinedBehaviorSanitizer

CC      ?= cc
comma   := ,
SAN     ?= 0
PYTHON  ?= /usr/bin/python3
RUN_DB  ?= users.db
RUN_ACCOUNTS ?= 10000

CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
              -Wmissing-prototypes -Wpointer-arith -g -MMD -MP -I. -I/usr/include/postgresql
ifeq ($(SAN),1)
BUILD  ?= build-san
CFLAGS  = $(CFLAGS_BASE) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
          -fno-sanitize-recover=undefined
LDFLAGS = -fsanitize=address,undefined
else
BUILD  ?= build
CFLAGS  = $(CFLAGS_BASE) -O2
LDFLAGS =
endif
LIBS = -lsqlite3 -lpq -levent -lcjson -lhttp_parser -lpthread -lm

COMMON_SRC   = $(wildcard common/*.c)
MASTER_SRC   = $(wildcard master/*.c)
FRONTEND_SRC = $(wildcard frontend/*.c)
WORKER_SRC   = $(wildcard worker/*.c)
LEDGER_SRC   = $(wildcard ledger/*.c)
TXCTL_SRC    = $(wildcard tools/txctl/*.c)
UNIT_SRC     = $(wildcard tests/unit/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

# Frontend assets (the dashboard page) are compiled in as byte arrays.
ASSETS     = $(wildcard frontend/assets/*)
ASSET_SRC  = $(if $(ASSETS),$(BUILD)/gen/assets.c)
ASSET_OBJ  = $(if $(ASSETS),$(BUILD)/obj/gen/assets.o)

COMMON_OBJ   = $(call obj,$(COMMON_SRC))
SERVER_OBJ   = $(call obj,$(MASTER_SRC) $(FRONTEND_SRC) $(WORKER_SRC) $(LEDGER_SRC)) $(ASSET_OBJ)
# Everything but the mains, for linking into tools and tests.
LIB_OBJ      = $(filter-out %/main.o,$(COMMON_OBJ) $(SERVER_OBJ))

TXPROCD = $(BUILD)/txprocd
TXCTL   = $(BUILD)/txctl
UNIT    = $(BUILD)/unit_tests
# The integration tests' server: txprocd with the failpoints live
# (common/failpoint.h); the same objects but for that one.
TXPROCD_TEST = $(BUILD)/txprocd-test
FAILPOINT_OBJ      = $(BUILD)/obj/common/failpoint.o
FAILPOINT_TEST_OBJ = $(BUILD)/obj/common/failpoint-test.o

.PHONY: all run test unit integration deps clean valgrind install loadtest mutants
all: $(TXPROCD) $(TXPROCD_TEST) $(TXCTL) $(UNIT)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/gen/assets.c: $(ASSETS) tools/embed_assets.sh
	@mkdir -p $(dir $@)
	sh tools/embed_assets.sh $(ASSETS) > $@

$(TXPROCD): $(COMMON_OBJ) $(SERVER_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(FAILPOINT_TEST_OBJ): common/failpoint.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DTXP_FAILPOINTS -c $< -o $@

$(TXPROCD_TEST): $(filter-out $(FAILPOINT_OBJ),$(COMMON_OBJ)) $(FAILPOINT_TEST_OBJ) $(SERVER_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(TXCTL): $(call obj,$(TXCTL_SRC)) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(UNIT): $(call obj,$(UNIT_SRC)) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

deps:
	@sh tools/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@if [ ! -f "$(RUN_DB)" ]; then $(TXCTL) seed --db "$(RUN_DB)" --accounts $(RUN_ACCOUNTS); fi
	exec $(TXPROCD) --db "$(RUN_DB)" --listen 127.0.0.1:8000

unit: all
	$(UNIT)

# The suite once per ledger backend, the two halves side by side, each over
# PYTEST_JOBS pytest-xdist processes: most of a test's time is a server
# starting, draining or waiting, so they overlap well even on 2 cores (one
# after the other the halves take about three times as long). Each half's
# output goes to $(BUILD)/integration-<backend>.log and is shown when both
# are done. TXP_TEST_BACKENDS=sqlite (or postgres) runs one half; PYTEST_ARGS
# are passed to pytest (-k, -x, a file...); PYTEST_JOBS=1 runs in order.
TXP_TEST_BACKENDS ?= sqlite postgres
PYTEST_JOBS ?= 2
PYTEST_ARGS ?= --durations=10
integration: all
	@sh tools/deps.sh $(PG_TEST_PACKAGES)
	@set -u; pids=""; \
	for b in $(subst $(comma), ,$(TXP_TEST_BACKENDS)); do \
	    echo "integration: $$b half -> $(BUILD)/integration-$$b.log"; \
	    TXP_BUILD=$(BUILD) TXP_TEST_BACKENDS=$$b $(PYTHON) -m pytest -q -p no:cacheprovider \
	        $(if $(filter-out 0 1,$(PYTEST_JOBS)),-n $(PYTEST_JOBS)) tests/integration $(PYTEST_ARGS) \
	        > $(BUILD)/integration-$$b.log 2>&1 & pids="$$pids $$!:$$b"; \
	done; \
	failed=""; for p in $$pids; do wait $${p%%:*} || failed="$$failed $${p#*:}"; done; \
	for p in $$pids; do echo "== integration, $${p#*:} ledger"; cat $(BUILD)/integration-$${p#*:}.log; done; \
	if [ -n "$$failed" ]; then echo "integration: failed on:$$failed"; exit 1; fi

# The C unit tests under valgrind (leaks and memory errors fail the run).
valgrind: all
	valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \
	    --errors-for-leak-kinds=definite,indirect --child-silent-after-fork=no $(UNIT)

# What the PostgreSQL half of the tests needs: a server to start, a client,
# and HAProxy to run the cluster's load balancer configuration in front of
# two nodes.
PG_TEST_PACKAGES = postgresql python3-psycopg2 python3-pytest-xdist haproxy

test: deps
	@sh tools/deps.sh $(PG_TEST_PACKAGES)
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory integration

# Locust (Debian's python3-locust) against a fresh server for LOADTEST_SECONDS,
# then the ledger invariant. Fails on any unexpected request failure.
LOADTEST_SECONDS ?= 20
loadtest: deps
	@dpkg-query -W -f='$${Status}' python3-locust 2>/dev/null | grep -q "install ok installed" || \
	    { echo "installing python3-locust"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-locust >/dev/null; }
	@$(MAKE) --no-print-directory all
	TXP_BUILD=$(BUILD) $(PYTHON) tools/loadtest/loadtest.py --seconds $(LOADTEST_SECONDS)

# Installs the binaries, the systemd unit and its system user. DESTDIR for
# packaging; the unit's ExecStart expects PREFIX=/usr/local.
PREFIX  ?= /usr/local
DESTDIR ?=
install: all
	install -D -m 0755 $(TXPROCD) $(DESTDIR)$(PREFIX)/bin/txprocd
	install -D -m 0755 $(TXCTL) $(DESTDIR)$(PREFIX)/bin/txctl
	install -D -m 0644 dist/txprocd.service $(DESTDIR)/etc/systemd/system/txprocd.service
	install -D -m 0644 dist/txprocd.sysusers $(DESTDIR)/usr/lib/sysusers.d/txprocd.conf
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/txprocd/README.md
	@if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then \
	    systemd-sysusers txprocd.conf; \
	    echo "installed; now: systemctl daemon-reload && systemctl enable --now txprocd"; fi

# Each mutant of tools/mutants/mutants.py (a patch breaking one guarantee)
# applied alone to a scratch copy, built, and its tests run: all must fail.
# Not in CI's required path (about a minute a mutant). MUTANT=substring picks.
MUTANT ?=
mutants: deps
	$(PYTHON) tools/mutants/run.py $(if $(MUTANT),--only "$(MUTANT)")

clean:
	rm -rf build build-san build-fuzz

# Sub-makefiles own their targets: bench (tools/bench), fuzz (tests/fuzz),
# chaos (tests/chaos), failover (tests/failover). Each may use the variables
# above.
-include tools/bench/bench.mk tests/fuzz/fuzz.mk tests/chaos/chaos.mk tests/failover/failover.mk \
    tools/pg/pg.mk

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
