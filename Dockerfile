# txprocd image: built on debian:bookworm, run on debian:bookworm-slim as a
# non-root user with the ledger on a volume. The master is PID 1: it reaps its
# own children and turns SIGTERM into a drain.
#
# The shared-memory segment lives in /dev/shm: about 128 bytes per queue entry
# plus 2 MiB, so the default --queue-size 65536 needs ~10 MiB (Docker's default
# shm is 64 MiB). For a bigger queue: docker run --shm-size=... / compose shm_size.

FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc make libc6-dev libevent-dev libcjson-dev libsqlite3-dev \
    libpq-dev libhttp-parser-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make clean && make -j"$(nproc)" build/txprocd build/txctl

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libevent-2.1-7 libcjson1 libsqlite3-0 libpq5 libhttp-parser2.9 curl \
    ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/txprocd --shell /usr/sbin/nologin txprocd \
 && install -d -o txprocd -g txprocd -m 0700 /var/lib/txprocd
COPY --from=build /src/build/txprocd /src/build/txctl /usr/local/bin/
COPY dist/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

USER txprocd
WORKDIR /var/lib/txprocd
VOLUME /var/lib/txprocd
EXPOSE 8000
ENV TXP_LISTEN=0.0.0.0:8000 \
    TXP_DB_PATH=/var/lib/txprocd/users.db \
    TXP_SHM_NAME=/txprocd \
    TXP_SEED_ACCOUNTS=0
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD []
