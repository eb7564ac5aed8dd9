# libFuzzer targets for the request parsers and the queue entry/ring
# (tests/fuzz/*.c). Built with clang into build-fuzz/, apart from the gcc
# builds, from the sources they exercise compiled with the fuzzer and
# sanitizer instrumentation; none of this is part of `make` or `make test`.
# Missing Debian packages (clang, its runtimes) are installed first.
#
#   make fuzz-build      build the fuzzers
#   make fuzz            run each for FUZZ_SECONDS (default 60) on a scratch copy
#                        of its seed corpus; fails on any crash, leak, sanitizer
#                        report or broken rule (the input is kept in
#                        build-fuzz/artifacts/)
#   make fuzz-replay     run each once over its checked-in corpus (a few seconds)

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   ?= build-fuzz
FUZZ_SAN      = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Werror \
                -Wshadow -Wstrict-prototypes -Wmissing-prototypes -MMD -MP -I. \
                $(FUZZ_SAN)

# Each target: its sources, libraries and the largest input worth trying
# (just past the 4096-byte body limit for the validator).
FUZZ_TARGETS        = fuzz_validate fuzz_entry fuzz_http
fuzz_validate_SRC   = tests/fuzz/fuzz_validate.c frontend/validate.c frontend/query.c common/txn.c
fuzz_validate_LIBS  = -lcjson
fuzz_validate_MAXLEN = 4608
fuzz_entry_SRC      = tests/fuzz/fuzz_entry.c common/ring.c common/txn.c common/log.c common/check.c
fuzz_entry_LIBS     = -lpthread
fuzz_entry_MAXLEN   = 2048
fuzz_http_SRC       = tests/fuzz/fuzz_http.c frontend/conn.c frontend/respond.c common/log.c \
                      common/check.c common/clock.c common/metrics.c
fuzz_http_LIBS      = -levent -lhttp_parser -lcjson
fuzz_http_MAXLEN    = 16384

fuzz_obj = $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(1))
FUZZ_BINS = $(addprefix $(FUZZ_BUILD)/,$(FUZZ_TARGETS))
FUZZ_OBJS = $(call fuzz_obj,$(sort $(foreach t,$(FUZZ_TARGETS),$($(t)_SRC))))

.PHONY: fuzz fuzz-build fuzz-replay fuzz-deps
fuzz-build: $(FUZZ_BINS)

fuzz-deps:
	@sh tests/fuzz/deps.sh

$(FUZZ_OBJS): $(FUZZ_BUILD)/obj/%.o: %.c | fuzz-deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/fuzz_validate: $(call fuzz_obj,$(fuzz_validate_SRC))
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^ $(fuzz_validate_LIBS)

$(FUZZ_BUILD)/fuzz_entry: $(call fuzz_obj,$(fuzz_entry_SRC))
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^ $(fuzz_entry_LIBS)

$(FUZZ_BUILD)/fuzz_http: $(call fuzz_obj,$(fuzz_http_SRC))
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^ $(fuzz_http_LIBS)

fuzz: fuzz-build
	@$(foreach t,$(FUZZ_TARGETS),sh tests/fuzz/run.sh $(FUZZ_BUILD)/$(t) tests/fuzz/corpus/$(t) \
	    $(FUZZ_SECONDS) $($(t)_MAXLEN) $(FUZZ_BUILD)/artifacts &&) true

fuzz-replay: fuzz-build
	@$(foreach t,$(FUZZ_TARGETS),echo "fuzz-replay: $(t)" && \
	    $(FUZZ_BUILD)/$(t) tests/fuzz/corpus/$(t)/* 2>$(FUZZ_BUILD)/$(t).replay.log || \
	    { cat $(FUZZ_BUILD)/$(t).replay.log; exit 1; } &&) true

-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
