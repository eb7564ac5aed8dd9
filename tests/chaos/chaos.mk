# `make chaos`: kill/stop children and the master under load, then check the
# ledger (tests/chaos/chaos.py). CHAOS_SECONDS bounds the run (CI uses 60).
CHAOS_SECONDS ?= 300

# CHAOS_BACKEND=postgres runs it on a throwaway PostgreSQL (tools/pg/pgtmp.sh),
# crash-restarting the database server once as well.
CHAOS_BACKEND ?= sqlite

# CHAOS_NODES=N (with CHAOS_BACKEND=postgres): N txprocd nodes on that one
# ledger, loaded and killed together (make chaos-nodes: two for 60 s).
CHAOS_NODES ?= 0

.PHONY: chaos chaos-nodes
chaos: deps
	@if [ "$(CHAOS_BACKEND)" = postgres ]; then sh tools/deps.sh $(PG_TEST_PACKAGES); fi
	@$(MAKE) --no-print-directory all
	TXP_BUILD=$(BUILD) $(PYTHON) tests/chaos/chaos.py --seconds $(CHAOS_SECONDS) --backend $(CHAOS_BACKEND) \
	    $(if $(filter-out 0,$(CHAOS_NODES)),--nodes $(CHAOS_NODES))

chaos-nodes:
	@$(MAKE) --no-print-directory chaos CHAOS_BACKEND=postgres CHAOS_NODES=2 CHAOS_SECONDS=60
