# `make run` on a PostgreSQL ledger. Included by the top-level Makefile, whose
# variables (TXCTL, TXPROCD, RUN_ACCOUNTS) are used here.
#
#   make run-pg   builds, starts a local cluster in $(RUN_PG_DIR) (tools/pg/pgtmp.sh,
#                 scram password in $(RUN_PG_DIR)/pgpass), seeds its database "ledger"
#                 the first time, serves 127.0.0.1:8000, stops the cluster on exit
#   make pg-stop  stops that cluster if something left it running
#
# The cluster and its data stay between runs; `sh tools/pg/pgtmp.sh destroy
# .pg-run` starts over, `sh tools/pg/pgtmp.sh psql .pg-run` looks inside.

RUN_PG_DIR ?= .pg-run
PGTMP      = sh tools/pg/pgtmp.sh
RUN_PG_ABS = $(abspath $(RUN_PG_DIR))
PG_USER_TABLES = SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')

.PHONY: run-pg pg-stop

# txprocd runs as a child of the recipe's shell rather than replacing it, so
# that the shell outlives it and stops the cluster afterwards: ^C, SIGTERM or
# SIGHUP is passed on to txprocd as SIGTERM, and the shell waits for its drain.
run-pg: deps
	@sh tools/deps.sh postgresql
	@$(MAKE) --no-print-directory all
	@set -e; \
	trap '$(PGTMP) stop "$(RUN_PG_ABS)"' EXIT; trap 'exit 130' INT TERM HUP; \
	$(PGTMP) start "$(RUN_PG_ABS)" --auth scram >/dev/null; \
	. "$(RUN_PG_ABS)/env"; export PGPASSFILE; URI=$$PGTMP_URI; \
	tables=$$($(PGTMP) psql "$(RUN_PG_ABS)" -qtAc "$(PG_USER_TABLES)"); \
	if [ "$$tables" = 0 ]; then $(TXCTL) seed --db "$$URI" --accounts $(RUN_ACCOUNTS); fi; \
	echo "run-pg: ledger $$URI"; \
	$(TXPROCD) --db "$$URI" --listen 127.0.0.1:8000 & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null || :' INT TERM HUP; \
	while :; do wait $$pid && rc=0 || rc=$$?; kill -0 $$pid 2>/dev/null || break; done; \
	exit $$rc

pg-stop:
	@$(PGTMP) stop "$(RUN_PG_ABS)"
