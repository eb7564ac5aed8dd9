/* libpq plumbing for the PostgreSQL backend: one connection with a deadline
 * on every round trip (a dead or partitioned server never hangs a worker or
 * a frontend's event loop past it), reconnection after a failure, error
 * classification by SQLSTATE (what is worth retrying), array parameters for
 * whole-batch statements, and a description of a conninfo that never shows
 * its password. Private to ledger/. */
#ifndef TXP_LEDGER_PG_CONN_H
#define TXP_LEDGER_PG_CONN_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "ledger/backend.h"

#define PGC_STR_(x) #x
#define PGC_STR(x) PGC_STR_(x)

/* The advisory locks that fence instances (two int4 keys: "tx" and the
 * node): the only instance holds (KEY1, 0) exclusively; node N holds it
 * shared, with (KEY1, N) exclusively. */
#define PGC_GUARD_KEY1 29816
#define PGC_GUARD_KEY2 0

/* Prepared on every (re)connection. */
struct pgc_stmt {
    const char *name;
    const char *sql;
    int nparams;
};

struct pgc {
    PGconn *conn;           /* NULL while disconnected */
    char *conninfo;
    const char *app;        /* fallback_application_name */
    int timeout_ms;         /* each round trip */
    const struct pgc_stmt *stmts;
    unsigned n_stmts;
    const char *session_sql; /* run after connecting (SETs), or NULL */
    char sqlstate[6];       /* of the last failure; "" for a lost connection */
    char error[224];        /* "<SQLSTATE>: <message> (<what>)" of the last failure */
    char constraint[64];    /* the constraint the last failure names, or "" */
    int broken;             /* the connection is gone: reconnect before the next use */
    int down_logged;        /* "cannot connect" said once per outage */
};

/* A connection handle; nothing is connected yet. NULL on out of memory. */
struct pgc *pgc_new(const char *conninfo, const char *app, int timeout_ms);
void pgc_free(struct pgc *c);

/* Connects if not connected (or broken), prepares c->stmts and runs
 * c->session_sql. 0, or -1 with c->error set. */
int pgc_ensure(struct pgc *c);
/* Closes the connection (the next pgc_ensure reconnects). */
void pgc_drop(struct pgc *c);

/* Runs sql (or, when prepared is set, the prepared statement of that name)
 * with text parameters (NULL entries are SQL NULL) and waits for its result
 * until the deadline. Returns the result when its status is
 * PGRES_COMMAND_OK or PGRES_TUPLES_OK (the caller PQclear()s it), else NULL
 * with c->sqlstate/c->error set and, for a lost or timed-out connection,
 * c->broken. */
PGresult *pgc_exec(struct pgc *c, const char *what, const char *sql, int prepared, int nparams,
                   const char *const *values);

/* Runs sql, a COPY ... FROM STDIN, and sends it len bytes of rows in
 * COPY's text format, all under one deadline. Returns the COPY's result
 * (PQcmdTuples: rows copied) or NULL as pgc_exec does. COPY takes rows
 * two to three times cheaper than INSERT ... SELECT FROM unnest(...). */
PGresult *pgc_copy(struct pgc *c, const char *what, const char *sql, const char *data, size_t len);

/* Runs fixed SQL for its effect (setup, migration, seeding): 0, or -1
 * after logging c->error. */
int pgc_run(struct pgc *c, const char *what, const char *sql);

/* LB_RETRY for failures that may pass (lost connection, timeout, deadlock,
 * serialization failure, lock timeout, shutdown, read-only standby,
 * resources), LB_FATAL otherwise, after a NULL from pgc_exec. */
enum lb_rc pgc_classify(const struct pgc *c);

/* For ledger_describe: host(s), port, dbname, user of a conninfo or URI. */
void pgc_describe(const char *conninfo, char *out, size_t cap);

/* A connection holding the instance's advisory locks (node 0: the only
 * instance); NULL (logged) when another instance holds them past wait_ms or
 * the server is unreachable. */
struct pgc *pgc_guard(const char *conninfo, unsigned node, int wait_ms);

/* 1 while the connection looks alive, without a round trip (reads what
 * the server sent, if anything: a server that went away has closed it). */
int pgc_alive(struct pgc *c);
/* Takes the instance's advisory locks on c (connecting if needed): 1 taken,
 * 0 another session holds the node's lock, 2 the ledger is held the other
 * way (a single instance while a node asks, nodes while a single instance
 * asks), -1 the server could not be asked. Nothing is left held unless 1. */
int pgc_take_guard(struct pgc *c, unsigned node);

/* Builds the text form of a one-dimensional array parameter, "{1,NULL,"a b"}". */
struct pgarr {
    char *buf;
    size_t len, cap;
    int failed; /* out of memory: the array is unusable */
};
void pgarr_begin(struct pgarr *a);
void pgarr_int(struct pgarr *a, int64_t v);
void pgarr_null(struct pgarr *a);
void pgarr_text(struct pgarr *a, const char *s, size_t len);
/* Closes the array; returns its text (valid until the next begin), or NULL
 * if memory ran out. */
const char *pgarr_end(struct pgarr *a);
void pgarr_free(struct pgarr *a);

/* Rows for pgc_copy in COPY's text format, built in a pgarr's buffer
 * (begin with pgarr_begin, take the bytes with pgcopy_data): fields, then
 * pgcopy_row() after each row. */
void pgcopy_int(struct pgarr *a, int64_t v);
void pgcopy_null(struct pgarr *a);
void pgcopy_text(struct pgarr *a, const char *s, size_t len);
void pgcopy_row(struct pgarr *a);
/* The rows so far and their length, or NULL if memory ran out. */
const char *pgcopy_data(struct pgarr *a, size_t *len);

/* A column of a result row as int64 (0 for NULL); *is_null if given. */
int64_t pgc_int(const PGresult *r, int row, int col, int *is_null);

#endif
