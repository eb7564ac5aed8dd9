# `make failover`: the ledger on a pg_auto_failover formation (a monitor, a
# primary and a synchronous standby, from Debian's packages), two txprocd
# nodes under load, the primary's machine "lost" (kill -9 of its keeper and
# postmaster), the standby promoted; then the ledger is checked
# (tests/failover/failover.py). FAILOVER_SECONDS bounds the load.
FAILOVER_SECONDS ?= 40
FAILOVER_PACKAGES = pg-auto-failover-cli postgresql-15-auto-failover

.PHONY: failover
failover: deps
	@sh tools/deps.sh $(PG_TEST_PACKAGES) $(FAILOVER_PACKAGES)
	@$(MAKE) --no-print-directory all
	TXP_BUILD=$(BUILD) $(PYTHON) tests/failover/failover.py --seconds $(FAILOVER_SECONDS)
