/* libpq plumbing for the PostgreSQL backend (pg_conn.h). Every round trip
 * runs on a non-blocking connection under a deadline, polled here, so that
 * an unreachable server costs a bounded wait and a clear error, never a
 * hung process. */
#include "ledger/pg_conn.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/check.h"
#include "common/clock.h"
#include "common/log.h"

struct pgc *pgc_new(const char *conninfo, const char *app, int timeout_ms)
{
    struct pgc *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->conninfo = strdup(conninfo);
    if (c->conninfo == NULL) {
        free(c);
        return NULL;
    }
    c->app = app;
    c->timeout_ms = timeout_ms;
    return c;
}

void pgc_drop(struct pgc *c)
{
    if (c->conn != NULL)
        PQfinish(c->conn);
    c->conn = NULL;
    c->broken = 0;
}

void pgc_free(struct pgc *c)
{
    if (c == NULL)
        return;
    pgc_drop(c);
    free(c->conninfo);
    free(c);
}

static void set_error(struct pgc *c, const char *sqlstate, const char *msg, const char *what)
{
    c->constraint[0] = '\0';
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", sqlstate ? sqlstate : "");
    /* libpq messages end with a newline; keep one line. */
    char line[160];
    snprintf(line, sizeof line, "%s", msg ? msg : "");
    line[strcspn(line, "\n")] = '\0';
    snprintf(c->error, sizeof c->error, "%s: %s (%s)", sqlstate && *sqlstate ? sqlstate : "connection",
             line, what);
}

/* Waits for events on the socket until deadline_us (monotonic). 1 ready,
 * 0 timed out, -1 error. */
static int wait_socket(PGconn *conn, short events, int64_t deadline_us)
{
    int fd = PQsocket(conn);
    if (fd < 0)
        return -1;
    for (;;) {
        int64_t left = deadline_us - clock_mono_us();
        if (left <= 0)
            return 0;
        struct pollfd p = { .fd = fd, .events = events };
        int n = poll(&p, 1, (int)((left + 999) / 1000));
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* NOTICEs ("relation already exists, skipping") are the server talking to
 * a person at a prompt; libpq would print them on stderr. */
static void drop_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Connects under the deadline with PQconnectStartParams/PQconnectPoll. */
static PGconn *connect_by(struct pgc *c, int64_t deadline_us)
{
    /* Our defaults first: the expanded conninfo (dbname) overrides them. */
    const char *keys[] = { "fallback_application_name", "connect_timeout", "keepalives",
                           "keepalives_idle", "keepalives_interval", "keepalives_count",
                           "dbname", NULL };
    const char *vals[] = { c->app, "5", "1", "10", "5", "3", c->conninfo, NULL };
    PGconn *conn = PQconnectStartParams(keys, vals, 1);
    if (conn == NULL) {
        set_error(c, "", "out of memory", "connect");
        return NULL;
    }
    if (PQstatus(conn) == CONNECTION_BAD) {
        set_error(c, "", PQerrorMessage(conn), "connect");
        PQfinish(conn);
        return NULL;
    }
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        int w = wait_socket(conn, st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline_us);
        if (w <= 0) {
            set_error(c, "", w == 0 ? "timed out" : strerror(errno), "connect");
            PQfinish(conn);
            return NULL;
        }
        st = PQconnectPoll(conn);
    }
    if (st == PGRES_POLLING_FAILED) {
        set_error(c, "", PQerrorMessage(conn), "connect");
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

static void result_error(struct pgc *c, const PGresult *r, const char *what)
{
    set_error(c, PQresultErrorField(r, PG_DIAG_SQLSTATE), PQresultErrorMessage(r), what);
    const char *constraint = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
    snprintf(c->constraint, sizeof c->constraint, "%s", constraint ? constraint : "");
}

/* Sends what PQsend* queued, then collects the results until the deadline. */
static PGresult *await(struct pgc *c, const char *what, int64_t deadline_us)
{
    PGconn *conn = c->conn;
    int f;
    while ((f = PQflush(conn)) == 1) {
        int w = wait_socket(conn, POLLOUT | POLLIN, deadline_us);
        if (w <= 0)
            goto timed_out;
        if (PQconsumeInput(conn) == 0)
            goto lost;
    }
    if (f < 0)
        goto lost;
    PGresult *keep = NULL, *r;
    for (;;) {
        while (PQisBusy(conn)) {
            int w = wait_socket(conn, POLLIN, deadline_us);
            if (w <= 0) {
                PQclear(keep);
                goto timed_out;
            }
            if (PQconsumeInput(conn) == 0) {
                PQclear(keep);
                goto lost;
            }
        }
        r = PQgetResult(conn);
        if (r == NULL)
            break;
        /* Keep the first failure, else the last result. */
        if (keep != NULL && (PQresultStatus(keep) == PGRES_FATAL_ERROR ||
                             PQresultStatus(keep) == PGRES_NONFATAL_ERROR)) {
            PQclear(r);
            continue;
        }
        PQclear(keep);
        keep = r;
    }
    if (keep == NULL)
        goto lost;
    ExecStatusType st = PQresultStatus(keep);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return keep;
    result_error(c, keep, what);
    PQclear(keep);
    if (PQstatus(conn) == CONNECTION_BAD)
        c->broken = 1;
    return NULL;
timed_out:
    set_error(c, "", "no answer from the server in time", what);
    c->broken = 1; /* the query may still run: this connection is useless now */
    return NULL;
lost:
    set_error(c, "", PQerrorMessage(conn), what);
    c->broken = 1;
    return NULL;
}

PGresult *pgc_exec(struct pgc *c, const char *what, const char *sql, int prepared, int nparams,
                   const char *const *values)
{
    if (c->conn == NULL || c->broken) {
        if (c->error[0] == '\0')
            set_error(c, "", "not connected", what);
        c->broken = 1;
        return NULL;
    }
    int64_t deadline = clock_mono_us() + (int64_t)c->timeout_ms * 1000;
    /* Without parameters, the simple protocol: it takes several statements. */
    int ok = prepared    ? PQsendQueryPrepared(c->conn, sql, nparams, values, NULL, NULL, 0)
             : nparams   ? PQsendQueryParams(c->conn, sql, nparams, NULL, values, NULL, NULL, 0)
                         : PQsendQuery(c->conn, sql);
    if (!ok) {
        set_error(c, "", PQerrorMessage(c->conn), what);
        c->broken = 1;
        return NULL;
    }
    return await(c, what, deadline);
}

/* Sends until libpq's output buffer is empty. 0, or -1 (c->error set,
 * broken). */
static int flush_all(struct pgc *c, const char *what, int64_t deadline_us)
{
    int f;
    while ((f = PQflush(c->conn)) == 1) {
        int w = wait_socket(c->conn, POLLOUT | POLLIN, deadline_us);
        if (w <= 0 || PQconsumeInput(c->conn) == 0) {
            set_error(c, "", w == 0 ? "no answer from the server in time" : PQerrorMessage(c->conn),
                      what);
            c->broken = 1;
            return -1;
        }
    }
    if (f < 0) {
        set_error(c, "", PQerrorMessage(c->conn), what);
        c->broken = 1;
        return -1;
    }
    return 0;
}

static int copy_late(struct pgc *c, const char *what, int64_t deadline_us)
{
    if (clock_mono_us() < deadline_us)
        return 0;
    set_error(c, "", "could not hand the rows to libpq in time", what);
    c->broken = 1;
    return 1;
}

PGresult *pgc_copy(struct pgc *c, const char *what, const char *sql, const char *data, size_t len)
{
    if (c->conn == NULL || c->broken) {
        if (c->error[0] == '\0')
            set_error(c, "", "not connected", what);
        c->broken = 1;
        return NULL;
    }
    ASSERT(len <= INT32_MAX);
    int64_t deadline = clock_mono_us() + (int64_t)c->timeout_ms * 1000;
    PGconn *conn = c->conn;
    if (!PQsendQuery(conn, sql)) {
        set_error(c, "", PQerrorMessage(conn), what);
        c->broken = 1;
        return NULL;
    }
    if (flush_all(c, what, deadline) != 0)
        return NULL;
    while (PQisBusy(conn)) {
        int w = wait_socket(conn, POLLIN, deadline);
        if (w <= 0 || PQconsumeInput(conn) == 0) {
            set_error(c, "", w == 0 ? "no answer from the server in time" : PQerrorMessage(conn),
                      what);
            c->broken = 1;
            return NULL;
        }
    }
    PGresult *start = PQgetResult(conn);
    if (start == NULL || PQresultStatus(start) != PGRES_COPY_IN) {
        /* Refused before any row (a missing column, no permission): the
         * error is this result; collect the rest of the exchange. */
        if (start == NULL) {
            set_error(c, "", PQerrorMessage(conn), what);
            c->broken = 1;
            return NULL;
        }
        /* Keep this error (its SQLSTATE decides retry or not): collecting
         * the end of the exchange would overwrite it. */
        result_error(c, start, what);
        PQclear(start);
        struct pgc saved = *c;
        PQclear(await(c, what, deadline));
        memcpy(c->sqlstate, saved.sqlstate, sizeof c->sqlstate);
        memcpy(c->error, saved.error, sizeof c->error);
        memcpy(c->constraint, saved.constraint, sizeof c->constraint);
        c->broken = 1; /* out of step with the server, most likely: start afresh */
        return NULL;
    }
    PQclear(start);
    /* Non-blocking libpq queues the whole buffer (growing its own) and
     * answers 0 only when it cannot: flush and offer it again, until the
     * deadline (a 0 with nothing left to flush means no memory). */
    int put;
    while ((put = PQputCopyData(conn, data, (int)len)) == 0)
        if (flush_all(c, what, deadline) != 0 || copy_late(c, what, deadline))
            return NULL;
    while (put > 0 && (put = PQputCopyEnd(conn, NULL)) == 0)
        if (flush_all(c, what, deadline) != 0 || copy_late(c, what, deadline))
            return NULL;
    if (put < 0) {
        set_error(c, "", PQerrorMessage(conn), what);
        c->broken = 1;
        return NULL;
    }
    return await(c, what, deadline);
}

int pgc_run(struct pgc *c, const char *what, const char *sql)
{
    PGresult *r = pgc_exec(c, what, sql, 0, 0, NULL);
    if (r == NULL) {
        log_error("%s", c->error);
        return -1;
    }
    PQclear(r);
    return 0;
}

int pgc_ensure(struct pgc *c)
{
    if (c->conn != NULL && !c->broken && PQstatus(c->conn) == CONNECTION_OK)
        return 0;
    pgc_drop(c);
    int64_t deadline = clock_mono_us() + (int64_t)c->timeout_ms * 1000;
    PGconn *conn = connect_by(c, deadline);
    if (conn == NULL)
        return -1;
    if (PQsetnonblocking(conn, 1) != 0) {
        set_error(c, "", PQerrorMessage(conn), "connect");
        PQfinish(conn);
        return -1;
    }
    PQsetNoticeProcessor(conn, drop_notice, NULL);
    c->conn = conn;
    for (unsigned i = 0; i < c->n_stmts; i++) {
        const struct pgc_stmt *s = &c->stmts[i];
        if (!PQsendPrepare(conn, s->name, s->sql, s->nparams, NULL)) {
            set_error(c, "", PQerrorMessage(conn), s->name);
            pgc_drop(c);
            return -1;
        }
        PGresult *r = await(c, s->name, deadline);
        if (r == NULL) {
            pgc_drop(c);
            return -1;
        }
        PQclear(r);
    }
    if (c->session_sql != NULL) {
        PGresult *r = pgc_exec(c, "session settings", c->session_sql, 0, 0, NULL);
        if (r == NULL) {
            pgc_drop(c);
            return -1;
        }
        PQclear(r);
    }
    c->error[0] = '\0';
    c->sqlstate[0] = '\0';
    return 0;
}

enum lb_rc pgc_classify(const struct pgc *c)
{
    const char *s = c->sqlstate;
    if (c->broken || s[0] == '\0')
        return LB_RETRY;
    static const char *const passing[] = {
        "40001", /* serialization_failure */
        "40P01", /* deadlock_detected */
        "55P03", /* lock_not_available (lock_timeout) */
        "57014", /* query_canceled (statement_timeout) */
        "25006", /* read_only_sql_transaction: a standby, until failover completes */
        /* unique_violation: users' primary key, should two batches open
         * one card at once (the card locks of pg_write.c prevent it), or
         * a row written by hand. Applied again, the batch sees the account.
         * Keys are inserted ON CONFLICT DO NOTHING, and a txid's violation
         * is told apart by its index before it gets here (pg_write.c). */
        "23505",
    };
    for (size_t i = 0; i < sizeof passing / sizeof passing[0]; i++)
        if (strcmp(s, passing[i]) == 0)
            return LB_RETRY;
    /* Classes: 08 connection, 53 resources, 57P shutdown/cannot connect now,
     * 58 system (I/O). */
    if (strncmp(s, "08", 2) == 0 || strncmp(s, "53", 2) == 0 || strncmp(s, "57P", 3) == 0 ||
        strncmp(s, "58", 2) == 0)
        return LB_RETRY;
    return LB_FATAL;
}

void pgc_describe(const char *conninfo, char *out, size_t cap)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (opts == NULL) {
        snprintf(out, cap, "PostgreSQL (unparsable conninfo: %s)", err ? err : "out of memory");
        if (err != NULL) {
            /* libpq's parse errors may quote the string: keep only the first line,
             * which names the problem, not the value. */
            out[strcspn(out, "\n")] = '\0';
            char *q = strchr(out, '"');
            if (q != NULL)
                snprintf(q, cap - (size_t)(q - out), ")");
        }
        PQfreemem(err);
        return;
    }
    static const char *const shown[] = { "host", "hostaddr", "port", "dbname", "user", "sslmode",
                                         "target_session_attrs" };
    size_t len = (size_t)snprintf(out, cap, "postgresql:");
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++) {
            if (strcmp(o->keyword, shown[i]) != 0 || len >= cap)
                continue;
            len += (size_t)snprintf(out + len, cap - len, " %s=%s", o->keyword, o->val);
        }
    }
    PQconninfoFree(opts);
}

int pgc_alive(struct pgc *c)
{
    if (c->conn == NULL || c->broken || PQstatus(c->conn) != CONNECTION_OK)
        return 0;
    struct pollfd p = { .fd = PQsocket(c->conn), .events = POLLIN };
    if (p.fd < 0)
        return 0;
    if (poll(&p, 1, 0) > 0 && (PQconsumeInput(c->conn) == 0 || PQstatus(c->conn) != CONNECTION_OK))
        return 0;
    /* An idle session gets nothing but a termination notice; drop any result. */
    while (!PQisBusy(c->conn)) {
        PGresult *r = PQgetResult(c->conn);
        if (r == NULL)
            break;
        PQclear(r);
    }
    return 1;
}

int pgc_take_guard(struct pgc *c, unsigned node)
{
    if (pgc_ensure(c) != 0)
        return -1;
    char sql[320];
    if (node == 0)
        snprintf(sql, sizeof sql, "SELECT CASE WHEN pg_try_advisory_lock(%d, %d) THEN 'ok' "
                 "ELSE 'held' END", PGC_GUARD_KEY1, PGC_GUARD_KEY2);
    else /* CASE evaluates in order: the shared lock is given back if the node's is taken */
        snprintf(sql, sizeof sql, "SELECT CASE WHEN NOT pg_try_advisory_lock_shared(%d, %d) "
                 "THEN 'held' WHEN pg_try_advisory_lock(%d, %u) THEN 'ok' "
                 "WHEN pg_advisory_unlock_shared(%d, %d) THEN 'node' ELSE 'node' END",
                 PGC_GUARD_KEY1, PGC_GUARD_KEY2, PGC_GUARD_KEY1, node, PGC_GUARD_KEY1,
                 PGC_GUARD_KEY2);
    PGresult *r = pgc_exec(c, "instance lock", sql, 0, 0, NULL);
    if (r == NULL)
        return -1;
    const char *v = PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "";
    int got = strcmp(v, "ok") == 0 ? 1 : strcmp(v, "node") == 0 ? 0 : 2;
    PQclear(r);
    if (node == 0 && got == 2)
        got = 0; /* held by another single instance or by nodes: one message */
    return got;
}

struct pgc *pgc_guard(const char *conninfo, unsigned node, int wait_ms)
{
    struct pgc *c = pgc_new(conninfo, "txprocd-master", 5000);
    if (c == NULL) {
        log_error("ledger guard: out of memory");
        return NULL;
    }
    char desc[256];
    pgc_describe(conninfo, desc, sizeof desc);
    if (pgc_ensure(c) != 0) {
        log_error("cannot connect to the ledger %s: %s", desc, c->error);
        pgc_free(c);
        return NULL;
    }
    int64_t deadline = clock_mono_us() + (int64_t)wait_ms * 1000;
    for (;;) {
        int got = pgc_take_guard(c, node);
        if (got < 0) {
            log_error("taking the ledger's instance lock on %s: %s", desc, c->error);
            break;
        }
        if (got == 1)
            return c;
        if (clock_mono_us() >= deadline) {
            if (node == 0)
                log_error("ledger %s is in use by another txprocd instance or by nodes started "
                          "with --node-id (still after %d s); without --node-id, one instance "
                          "per ledger", desc, wait_ms / 1000);
            else if (got == 0)
                log_error("node id %u is in use by another live txprocd on ledger %s (still "
                          "after %d s); give each node its own --node-id", node, desc,
                          wait_ms / 1000);
            else
                log_error("ledger %s is held by a txprocd started without --node-id (the only "
                          "instance); nodes cannot join it until it stops", desc);
            break;
        }
        usleep(100000);
    }
    pgc_free(c);
    return NULL;
}

void pgarr_begin(struct pgarr *a)
{
    a->len = 0;
    a->failed = 0;
}

static void put(struct pgarr *a, const char *s, size_t n)
{
    if (a->failed)
        return;
    if (a->len + n + 2 > a->cap) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap < a->len + n + 2)
            cap *= 2;
        char *buf = realloc(a->buf, cap);
        if (buf == NULL) {
            a->failed = 1;
            return;
        }
        a->buf = buf;
        a->cap = cap;
    }
    memcpy(a->buf + a->len, s, n);
    a->len += n;
}

static void sep(struct pgarr *a)
{
    put(a, a->len == 0 ? "{" : ",", 1);
}

void pgarr_int(struct pgarr *a, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%" PRId64, v);
    sep(a);
    put(a, num, (size_t)n);
}

void pgarr_null(struct pgarr *a)
{
    sep(a);
    put(a, "NULL", 4);
}

void pgarr_text(struct pgarr *a, const char *s, size_t len)
{
    sep(a);
    put(a, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\')
            put(a, "\\", 1);
        put(a, &s[i], 1);
    }
    put(a, "\"", 1);
}

const char *pgarr_end(struct pgarr *a)
{
    if (a->len == 0)
        put(a, "{", 1);
    put(a, "}", 1);
    if (a->failed)
        return NULL;
    a->buf[a->len] = '\0';
    return a->buf;
}

void pgarr_free(struct pgarr *a)
{
    free(a->buf);
    *a = (struct pgarr){ 0 };
}

static void copy_sep(struct pgarr *a)
{
    put(a, "\t", 1);
}

void pgcopy_int(struct pgarr *a, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%" PRId64, v);
    put(a, num, (size_t)n);
    copy_sep(a);
}

void pgcopy_null(struct pgarr *a)
{
    put(a, "\\N", 2);
    copy_sep(a);
}

/* COPY's text format: backslash, tab, newline and carriage return are
 * escaped; every other byte stands for itself. */
void pgcopy_text(struct pgarr *a, const char *s, size_t len)
{
    size_t from = 0;
    for (size_t i = 0; i < len; i++) {
        const char *esc = s[i] == '\\' ? "\\\\" : s[i] == '\t' ? "\\t" : s[i] == '\n' ? "\\n"
                        : s[i] == '\r' ? "\\r" : NULL;
        if (esc == NULL)
            continue;
        put(a, s + from, i - from);
        put(a, esc, 2);
        from = i + 1;
    }
    put(a, s + from, len - from);
    copy_sep(a);
}

void pgcopy_row(struct pgarr *a)
{
    if (a->failed)
        return;
    ASSERT(a->len > 0 && a->buf[a->len - 1] == '\t');
    a->buf[a->len - 1] = '\n';
}

const char *pgcopy_data(struct pgarr *a, size_t *len)
{
    *len = a->len;
    return a->failed ? NULL : (a->len == 0 ? "" : a->buf);
}

int64_t pgc_int(const PGresult *r, int row, int col, int *is_null)
{
    int null = PQgetisnull(r, row, col);
    if (is_null != NULL)
        *is_null = null;
    return null ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}
