# `make chaos`: kill/stop children and the master under load, then check the
# ledger (tests/chaos/chaos.py). CHAOS_SECONDS bounds the run (CI uses 60).
CHAOS_SECONDS ?= 300

.PHONY: chaos
chaos: deps
	@$(MAKE) --no-print-directory all
	TXP_BUILD=$(BUILD) $(PYTHON) tests/chaos/chaos.py --seconds $(CHAOS_SECONDS)
