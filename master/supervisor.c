/* Supervision: spawn, reap, restart, drain (see supervisor.h). All of the
 * master's decisions use its own copy of pids and slot states; the children
 * table in shared memory is written for observers (txctl, /metrics) and only
 * the children's own "running" flag is read back, for readiness. */
#include "master/supervisor.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/check.h"
#include "common/clock.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "frontend/frontend.h"
#include "master/history.h"
#include "master/notify.h"
#include "worker/worker.h"

/* Restart policy. A child that dies before it reports ready (or a failed
 * start) cannot do its job: ten such deaths of one role within a minute
 * are a crash loop, and the role is given up. A child that was serving and
 * died (kill -9 by an operator or the OOM killer, a crash on some request)
 * has shown it can run: it is restarted with back-off, however often, and
 * never counted toward giving up, so outside kills cannot stop the server. */
#define BACKOFF_MIN_US 100000LL
#define BACKOFF_MAX_US 5000000LL
#define BACKOFF_MAX_READY_US 1000000LL /* cap after a death that followed readiness */
#define STABLE_RUN_US 10000000LL   /* a child up this long resets its back-off */
#define CRASH_LOOP_COUNT 10
#define CRASH_LOOP_WINDOW_US 60000000LL
/* The loop wakes at least once a second; a wake-up this much later than
 * asked for means the master itself was not running (SIGSTOP of the whole
 * group, docker pause, a suspended VM). Its children were most likely
 * frozen as well, so their heartbeats are not judged across that gap. */
#define STALL_US 2000000LL
#define FRONTEND_STOP_GRACE_US 5000000LL
#define STATUS_EVERY_S 5

enum phase { PHASE_RUNNING, PHASE_DRAIN_FRONTENDS, PHASE_DRAIN_WORKERS, PHASE_DONE };

struct slot {
    pid_t pid;
    int role;
    uint32_t index;
    unsigned quick_crashes;   /* consecutive crashes, for the back-off */
    int64_t started_us;       /* monotonic */
    int64_t restart_at_us;    /* monotonic; 0 = no restart scheduled */
    int failed;               /* never restarted again */
    int hung;                 /* killed for a stale heartbeat, not yet reaped */
    int retiring;             /* asked to exit by a rolling restart */
};

struct role_crashes {
    int64_t at_us[CRASH_LOOP_COUNT];
    unsigned next;
    int gave_up;
};

struct supervisor {
    const struct config *cfg;
    struct shm_seg *seg;
    int listen_fd;
    pid_t master_pid;
    struct slot slots[SHM_MAX_CHILDREN];
    uint32_t n_slots;
    struct role_crashes crashes[3]; /* indexed by enum child_role */
    enum phase phase;
    int64_t phase_deadline_us;
    int drain_expired;        /* workers were killed at the drain deadline */
    struct {
        int active;
        uint32_t next;        /* next slot to restart */
        int32_t slot;         /* slot being replaced, -1 if none */
        int64_t deadline_us;  /* the retiring child must be gone by then */
    } roll;
    int ready;
    int exit_code;
    int64_t resumed_us;       /* monotonic; end of the master's last stall, 0 if none */
    int64_t watchdog_us;      /* systemd's WatchdogSec, 0 if none */
    int64_t watchdog_sent_us;
    struct ledger_guard *guard;
    sigset_t sigs;
};

static const char *role_name(int role)
{
    return role == ROLE_FRONTEND ? "frontend" : "worker";
}

static void on_sigchld(int sig)
{
    (void)sig; /* only here so SIGCHLD is never discarded; sigtimedwait takes it */
}

/* A worker keeps SIGTERM and SIGUSR2 blocked until it has installed its own
 * handlers (worker_main unblocks them), so a drain or retire request sent
 * right after fork is held, not lost to the default action. */
static void child_reset_signals(int role)
{
    sigset_t mask;
    sigemptyset(&mask);
    if (role == ROLE_WORKER) {
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGUSR2);
    }
    sigprocmask(SIG_SETMASK, &mask, NULL);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    /* Ctrl-C reaches the whole process group; only the master decides how
     * to stop, so children leave SIGINT to it. */
    signal(SIGINT, SIG_IGN);
}

static void child_run(struct supervisor *s, uint32_t i) __attribute__((noreturn));
static void child_run(struct supervisor *s, uint32_t i)
{
    /* If the master dies, its children go too; the next master adopts the
     * segment and requeues whatever they had claimed. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != s->master_pid)
        _exit(1);
    child_reset_signals(s->slots[i].role);
    char role[32];
    snprintf(role, sizeof role, "%s-%u", role_name(s->slots[i].role), s->slots[i].index);
    log_set_role(role);
    /* Test hook: a child that dies before it is ready, as one that cannot
     * open its database or bind its resources would. */
    if (failpoint(s->slots[i].role == ROLE_FRONTEND ? "FRONTEND_START" : "WORKER_START"))
        _exit(1);
    failpoint_hold(s->slots[i].role == ROLE_FRONTEND ? "FRONTEND_HOLD" : "WORKER_HOLD");
    int rc;
    if (s->slots[i].role == ROLE_FRONTEND) {
        rc = frontend_main(s->cfg, s->seg, s->listen_fd, i, s->slots[i].index);
    } else {
        close(s->listen_fd);
        rc = worker_main(s->cfg, s->seg, i, s->slots[i].index);
    }
    fflush(NULL);
    _exit(rc);
}

static void spawn(struct supervisor *s, uint32_t i)
{
    ASSERT(i < s->n_slots);
    struct slot *sl = &s->slots[i];
    struct shm_child *row = &s->seg->children[i];
    ASSERT(sl->pid == 0 && !sl->failed); /* one process per slot, never a failed one */
    sl->restart_at_us = 0;
    row->state = CHILD_STARTING;
    pid_t pid = fork();
    if (pid < 0) {
        log_error("fork for %s %u: %s; retrying in 1 s", role_name(sl->role), sl->index, strerror(errno));
        sl->restart_at_us = clock_mono_us() + 1000000;
        row->state = CHILD_EXITED;
        return;
    }
    if (pid == 0)
        child_run(s, i);
    sl->pid = pid;
    sl->started_us = clock_mono_us();
    if (sl->role == ROLE_WORKER && s->phase == PHASE_DRAIN_WORKERS)
        kill(pid, SIGTERM); /* a replacement during the drain drains too */
    row->pid = pid;
    row->started_at_us = clock_wall_us();
    row->heartbeat_us = sl->started_us;
    log_debug("started %s %u as pid %d", role_name(sl->role), sl->index, (int)pid);
}

static void describe_exit(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "stopped with wait status %#x", status);
}

/* Records a crash of a role; returns 1 if the role just entered a crash loop. */
static int crash_loop(struct supervisor *s, int role, int64_t now)
{
    struct role_crashes *rc = &s->crashes[role];
    rc->at_us[rc->next % CRASH_LOOP_COUNT] = now;
    rc->next++;
    /* After the increment, the slot at next is the oldest of the last COUNT. */
    int64_t oldest = rc->at_us[rc->next % CRASH_LOOP_COUNT];
    if (!rc->gave_up && rc->next >= CRASH_LOOP_COUNT && now - oldest < CRASH_LOOP_WINDOW_US) {
        rc->gave_up = 1;
        return 1;
    }
    return 0;
}

static void mark_failed(struct supervisor *s, uint32_t i)
{
    s->slots[i].failed = 1;
    s->slots[i].restart_at_us = 0;
    s->seg->children[i].state = CHILD_FAILED;
}

static void schedule_restart(struct supervisor *s, uint32_t i, int64_t now, int was_ready)
{
    struct slot *sl = &s->slots[i];
    if (now - sl->started_us > STABLE_RUN_US)
        sl->quick_crashes = 0;
    int64_t delay = BACKOFF_MIN_US << (sl->quick_crashes < 6 ? sl->quick_crashes : 6);
    int64_t cap = was_ready ? BACKOFF_MAX_READY_US : BACKOFF_MAX_US;
    if (delay > cap)
        delay = cap;
    sl->quick_crashes++;
    sl->restart_at_us = now + delay;
    s->seg->children[i].restarts++;
    log_info("restarting %s %u in %lld ms", role_name(sl->role), sl->index, (long long)(delay / 1000));
}

static int role_all_failed(const struct supervisor *s, int role)
{
    for (uint32_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].role == role && !s->slots[i].failed)
            return 0;
    return 1;
}

static void begin_drain(struct supervisor *s, int exit_code);

static void on_child_exit(struct supervisor *s, uint32_t i, int status)
{
    struct slot *sl = &s->slots[i];
    struct shm_child *row = &s->seg->children[i];
    int64_t now = clock_mono_us();
    pid_t pid = sl->pid;
    ASSERT(pid > 0 && !sl->failed);
    /* The child sets RUNNING itself once it serves (DRAINING after that). */
    int32_t last_state = __atomic_load_n(&row->state, __ATOMIC_RELAXED);
    int was_ready = last_state == CHILD_RUNNING || last_state == CHILD_DRAINING;
    sl->pid = 0;
    sl->hung = 0;
    row->pid = 0;
    row->last_exit = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    row->state = CHILD_EXITED;

    char how[96];
    describe_exit(status, how, sizeof how);
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    int expected = clean && (s->phase != PHASE_RUNNING || sl->retiring);
    if (expected)
        log_info("%s %u (pid %d) %s", role_name(sl->role), sl->index, (int)pid, how);
    else
        log_warn("%s %u (pid %d) %s", role_name(sl->role), sl->index, (int)pid, how);

    if (sl->role == ROLE_WORKER) {
        uint32_t n = ring_requeue(s->seg->ring, sl->index);
        if (n > 0) {
            metrics_add(shm_metrics(s->seg, s->n_slots), METRIC_entries_requeued, n);
            log_warn("requeued %u unacknowledged entries of worker %u", n, sl->index);
        }
    }
    if (sl->retiring) {
        sl->retiring = 0;
        /* Planned: replaced at once, no back-off, not a crash. A drain that
         * began meanwhile still needs its workers. */
        int needed = s->phase == PHASE_RUNNING ||
                     (sl->role == ROLE_WORKER && s->phase != PHASE_DONE && !s->drain_expired);
        if (needed) {
            row->restarts++;
            spawn(s, i);
            return;
        }
    }

    if (expected || (sl->role == ROLE_FRONTEND && s->phase != PHASE_RUNNING) || s->drain_expired)
        return;
    if (WIFEXITED(status) && WEXITSTATUS(status) == TXP_EXIT_FATAL) {
        log_error("%s %u exited with the fatal code %d: not restarting it", role_name(sl->role),
                  sl->index, TXP_EXIT_FATAL);
        mark_failed(s, i);
    } else if (was_ready) {
        schedule_restart(s, i, now, 1); /* it could run: never a step toward giving up */
        return;
    } else if (crash_loop(s, sl->role, now)) {
        log_error("CRASH LOOP: %d %s crashes within %lld s; no longer restarting %ss",
                  CRASH_LOOP_COUNT, role_name(sl->role), CRASH_LOOP_WINDOW_US / 1000000,
                  role_name(sl->role));
        for (uint32_t k = 0; k < s->n_slots; k++)
            if (s->slots[k].role == sl->role && s->slots[k].pid == 0)
                mark_failed(s, k);
    } else if (s->crashes[sl->role].gave_up) {
        mark_failed(s, i);
    } else {
        schedule_restart(s, i, now, 0);
        return;
    }
    if (role_all_failed(s, sl->role) && s->phase == PHASE_RUNNING) {
        log_error("no %s can run; shutting down", role_name(sl->role));
        begin_drain(s, 1);
    }
}

static void reap(struct supervisor *s)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (uint32_t i = 0; i < s->n_slots; i++) {
            if (s->slots[i].pid == pid) {
                on_child_exit(s, i, status);
                break;
            }
        }
    }
}

static void signal_role(struct supervisor *s, int role, int sig)
{
    for (uint32_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].role == role && s->slots[i].pid > 0)
            kill(s->slots[i].pid, sig);
}

static unsigned alive(const struct supervisor *s, int role)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].role == role && s->slots[i].pid > 0)
            n++;
    return n;
}

static int restarts_pending(const struct supervisor *s, int role)
{
    for (uint32_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].role == role && s->slots[i].restart_at_us != 0)
            return 1;
    return 0;
}

static void begin_drain(struct supervisor *s, int exit_code)
{
    if (s->phase != PHASE_RUNNING)
        return;
    s->exit_code = exit_code;
    s->phase = PHASE_DRAIN_FRONTENDS;
    s->phase_deadline_us = clock_mono_us() + FRONTEND_STOP_GRACE_US;
    s->seg->hdr->master_state = MASTER_DRAINING;
    notify_send("STOPPING=1");
    log_info("draining: stopping %u frontends, then workers apply what is queued (limit %u s)",
             alive(s, ROLE_FRONTEND), s->cfg->drain_timeout_s);
    close(s->listen_fd); /* frontends hold their own copies until they stop */
    s->listen_fd = -1;
    for (uint32_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].role == ROLE_FRONTEND)
            s->slots[i].restart_at_us = 0;
    signal_role(s, ROLE_FRONTEND, SIGTERM);
}

static void drain_step(struct supervisor *s, int64_t now)
{
    if (s->phase == PHASE_DRAIN_FRONTENDS) {
        if (alive(s, ROLE_FRONTEND) == 0) {
            s->phase = PHASE_DRAIN_WORKERS;
            s->phase_deadline_us = now + (int64_t)s->cfg->drain_timeout_s * 1000000;
            __atomic_store_n(&s->seg->hdr->master_state, MASTER_DRAINING_WORKERS, __ATOMIC_SEQ_CST);
            log_info("frontends stopped; %llu entries left to apply",
                     (unsigned long long)ring_pending(s->seg->ring));
            signal_role(s, ROLE_WORKER, SIGTERM);
            ring_wake_all(s->seg->ring);
        } else if (now > s->phase_deadline_us) {
            log_warn("frontends did not stop within %lld s; killing them",
                     FRONTEND_STOP_GRACE_US / 1000000);
            signal_role(s, ROLE_FRONTEND, SIGKILL);
            s->phase_deadline_us = INT64_MAX;
        }
    } else if (s->phase == PHASE_DRAIN_WORKERS) {
        if (alive(s, ROLE_WORKER) == 0 && !restarts_pending(s, ROLE_WORKER)) {
            s->phase = PHASE_DONE;
        } else if (now > s->phase_deadline_us) {
            log_warn("drain timeout (%u s) reached; stopping workers", s->cfg->drain_timeout_s);
            for (uint32_t i = 0; i < s->n_slots; i++)
                s->slots[i].restart_at_us = 0;
            s->drain_expired = 1;
            signal_role(s, ROLE_WORKER, SIGKILL);
            s->phase_deadline_us = INT64_MAX;
        }
    }
}

static void check_ready(struct supervisor *s)
{
    for (uint32_t i = 0; i < s->n_slots; i++)
        if (!s->slots[i].failed && s->seg->children[i].state != CHILD_RUNNING)
            return;
    s->ready = 1;
    s->seg->hdr->master_state = MASTER_RUNNING;
    notify_send("READY=1");
    log_info("ready: %u frontends and %u workers running", alive(s, ROLE_FRONTEND), alive(s, ROLE_WORKER));
}

static void run_due_restarts(struct supervisor *s, int64_t now)
{
    for (uint32_t i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->restart_at_us == 0 || sl->restart_at_us > now || sl->failed)
            continue;
        if (sl->role == ROLE_FRONTEND && s->phase != PHASE_RUNNING)
            sl->restart_at_us = 0;
        else
            spawn(s, i);
    }
}

static int64_t next_wakeup(const struct supervisor *s, int64_t now, int64_t next_sample)
{
    int64_t t = next_sample;
    if ((!s->ready || s->roll.active) && s->phase == PHASE_RUNNING && now + 20000 < t)
        t = now + 20000; /* children report "running" in shm: poll only while waiting for it */
    if (s->phase == PHASE_DRAIN_FRONTENDS || s->phase == PHASE_DRAIN_WORKERS)
        if (s->phase_deadline_us < t)
            t = s->phase_deadline_us;
    for (uint32_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].restart_at_us != 0 && s->slots[i].restart_at_us < t)
            t = s->slots[i].restart_at_us;
    return t > now ? t : now;
}

/* A child that stopped updating its heartbeat (SIGSTOP, a deadlock, a batch
 * stuck far beyond any busy timeout) is killed; the reaper then requeues its
 * claim and restarts it like any crashed child. */
static void check_heartbeats(struct supervisor *s, int64_t now)
{
    int64_t limit = (int64_t)s->cfg->child_timeout_s * 1000000;
    if (limit == 0)
        return;
    for (uint32_t i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        int64_t beat = __atomic_load_n(&s->seg->children[i].heartbeat_us, __ATOMIC_RELAXED);
        if (beat < s->resumed_us)
            beat = s->resumed_us; /* the gap was the master's own; see STALL_US */
        if (sl->pid <= 0 || sl->hung || now - beat <= limit)
            continue;
        log_error("%s %u (pid %d) sent no heartbeat for %.1f s (limit %u s); killing it",
                  role_name(sl->role), sl->index, (int)sl->pid, (double)(now - beat) / 1e6,
                  s->cfg->child_timeout_s);
        sl->hung = 1;
        kill(sl->pid, SIGKILL);
    }
}

/* The master's own liveness for systemd: it pings from the loop that does
 * the supervising, so a wedged master misses its pings and gets restarted. */
static void watchdog_ping(struct supervisor *s, int64_t now)
{
    if (s->watchdog_us > 0 && now - s->watchdog_sent_us >= s->watchdog_us / 2 - 1000000) {
        notify_send("WATCHDOG=1");
        s->watchdog_sent_us = now;
    }
}

/* Another instance holds the ledger: two writers would hand out the same
 * txids. No worker of this one may commit again: kill them now, restart
 * none, and drain the frontends; what is queued stays in the segment. */
static void fence(struct supervisor *s)
{
    for (uint32_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].role == ROLE_WORKER)
            s->slots[i].restart_at_us = 0;
    s->drain_expired = 1;
    signal_role(s, ROLE_WORKER, SIGKILL);
    begin_drain(s, 1);
}

static void periodic(struct supervisor *s, int64_t *next_sample, unsigned *ticks)
{
    if (!s->drain_expired && ledger_guard_check(s->guard) < 0)
        fence(s);
    history_sample(s->seg);
    check_heartbeats(s, clock_mono_us());
    watchdog_ping(s, clock_mono_us());
    *next_sample += 1000000;
    if (*next_sample < clock_mono_us()) /* after a stall: one sample, not one per lost second */
        *next_sample = clock_mono_us() + 1000000;
    if (++*ticks % STATUS_EVERY_S == 0) {
        struct ring_stats rs;
        ring_stats(s->seg->ring, &rs);
        notify_status("%u frontends, %u workers; queue %llu/%llu",
                      alive(s, ROLE_FRONTEND), alive(s, ROLE_WORKER),
                      (unsigned long long)(rs.depth + rs.claimed), (unsigned long long)rs.capacity);
    }
}

#define ROLL_RETIRE_GRACE_US 10000000LL

static void roll_start(struct supervisor *s)
{
    if (s->phase != PHASE_RUNNING) {
        log_warn("SIGHUP ignored: draining");
        return;
    }
    if (s->roll.active) {
        log_warn("SIGHUP ignored: a rolling restart is already in progress");
        return;
    }
    s->roll.active = 1;
    s->roll.next = 0;
    s->roll.slot = -1;
    log_info("SIGHUP: rolling restart of %u children, one at a time", s->n_slots);
}

/* Restarts one child at a time: retire it (frontends stop accepting and
 * finish their requests while the others keep serving the shared socket;
 * workers finish their batch and leave the queue to the others), start its
 * replacement at once, and wait until that one runs before the next. */
static void roll_step(struct supervisor *s, int64_t now)
{
    if (!s->roll.active || s->phase != PHASE_RUNNING)
        return;
    if (s->roll.slot >= 0) {
        struct slot *sl = &s->slots[s->roll.slot];
        if (sl->retiring) {
            if (now > s->roll.deadline_us && sl->pid > 0) {
                log_warn("%s %u did not retire within %lld s; killing it", role_name(sl->role),
                         sl->index, ROLL_RETIRE_GRACE_US / 1000000);
                kill(sl->pid, SIGKILL);
                s->roll.deadline_us = INT64_MAX;
            }
            return;
        }
        if (sl->pid > 0 && s->seg->children[s->roll.slot].state != CHILD_RUNNING)
            return; /* replacement still starting */
        s->roll.slot = -1;
    }
    while (s->roll.next < s->n_slots) {
        uint32_t i = s->roll.next++;
        struct slot *sl = &s->slots[i];
        if (sl->pid <= 0 || sl->failed || s->seg->children[i].state != CHILD_RUNNING)
            continue; /* dead or restarting anyway */
        sl->retiring = 1;
        s->roll.slot = (int32_t)i;
        s->roll.deadline_us = now + ROLL_RETIRE_GRACE_US;
        kill(sl->pid, sl->role == ROLE_WORKER ? SIGUSR2 : SIGTERM);
        return;
    }
    s->roll.active = 0;
    log_info("rolling restart complete");
}

static void handle_signal(struct supervisor *s, int sig)
{
    if (sig == SIGCHLD) {
        reap(s);
    } else if (sig == SIGTERM || sig == SIGINT) {
        if (s->phase == PHASE_RUNNING)
            log_info("received %s", strsignal(sig));
        begin_drain(s, 0);
    } else if (sig == SIGHUP) {
        roll_start(s);
    }
}

static void supervisor_init(struct supervisor *s, const struct config *cfg, struct shm_seg *seg,
                            int listen_fd)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    s->seg = seg;
    s->listen_fd = listen_fd;
    s->master_pid = getpid();
    s->n_slots = seg->hdr->n_children;
    ASSERT(s->n_slots >= 2 && s->n_slots <= SHM_MAX_CHILDREN);
    s->watchdog_us = notify_watchdog_usec();
    for (uint32_t i = 0; i < s->n_slots; i++) {
        s->slots[i].role = seg->children[i].role;
        s->slots[i].index = (uint32_t)seg->children[i].index;
    }
    sigemptyset(&s->sigs);
    sigaddset(&s->sigs, SIGCHLD);
    sigaddset(&s->sigs, SIGTERM);
    sigaddset(&s->sigs, SIGINT);
    sigaddset(&s->sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &s->sigs, NULL);
    signal(SIGCHLD, on_sigchld);
}

static int supervisor_finish(struct supervisor *s)
{
    uint64_t pending = ring_pending(s->seg->ring);
    s->seg->hdr->master_state = MASTER_STOPPED;
    if (pending == 0) {
        if (s->cfg->node_id != 0)
            ledger_return_txids(s->guard, s->seg->ring->txid_base, ring_next_txid(s->seg->ring));
        shm_unlink_name(s->seg->name);
        log_info("drained: every accepted transaction is applied; exiting");
        return s->exit_code;
    }
    log_error("%llu accepted transactions are still queued in %s; the next txprocd started with "
              "the same --shm-name applies them", (unsigned long long)pending, s->seg->name);
    return 1;
}

/* One eventfd per frontend index, made before the first fork so every
 * child inherits all of them: workers write to a frontend's to say its
 * completion rings have outcomes (completion.h). They outlive restarts, so a
 * replacement frontend gets its predecessor's, already known to the workers. */
static int open_notify_fds(struct shm_seg *seg)
{
    for (uint32_t f = 0; f < seg->hdr->params.n_frontends; f++) {
        seg->notify_fd[f] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (seg->notify_fd[f] < 0) {
            log_error("eventfd for frontend %u: %s", f, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int supervisor_run(const struct config *cfg, struct shm_seg *seg, int listen_fd,
                   struct ledger_guard *guard)
{
    static struct supervisor s; /* large; one per process */
    if (open_notify_fds(seg) != 0)
        return TXP_EXIT_FATAL;
    supervisor_init(&s, cfg, seg, listen_fd);
    s.guard = guard;
    for (uint32_t i = 0; i < s.n_slots; i++)
        spawn(&s, i);

    int64_t next_sample = clock_mono_us() + 1000000;
    unsigned ticks = 0;
    while (s.phase != PHASE_DONE) {
        int64_t now = clock_mono_us();
        int64_t wait = next_wakeup(&s, now, next_sample) - now;
        struct timespec ts = { wait / 1000000, (long)(wait % 1000000) * 1000 };
        int sig = sigtimedwait(&s.sigs, NULL, &ts);
        int64_t woke = clock_mono_us();
        if (woke - now > wait + STALL_US) {
            log_warn("the master did not run for %.1f s (stopped or starved); child heartbeats "
                     "are judged from now on", (double)(woke - now - wait) / 1e6);
            s.resumed_us = woke;
        }
        if (sig > 0)
            handle_signal(&s, sig);
        else if (errno != EAGAIN && errno != EINTR)
            log_error("sigtimedwait: %s", strerror(errno));
        now = clock_mono_us();
        run_due_restarts(&s, now);
        if (!s.ready && s.phase == PHASE_RUNNING)
            check_ready(&s);
        if (now >= next_sample)
            periodic(&s, &next_sample, &ticks);
        roll_step(&s, now);
        drain_step(&s, now);
    }
    return supervisor_finish(&s);
}
