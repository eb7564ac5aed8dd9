/* txctl top: rates come from the difference of two reads of the summed
 * counters, so nothing is added to the server for it. On a terminal the
 * screen is redrawn in place and stdin is read raw for 'q'; on a pipe it
 * degrades to one plain line per interval. */
#include "tools/txctl/top.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/stats.h"

static volatile sig_atomic_t top_interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    top_interrupted = 1;
}

struct sample {
    struct metric_totals t;
    struct ring_stats q;
    int64_t at_us;
};

static void take(const struct shm_seg *seg, struct sample *s)
{
    metrics_sum(seg->metrics, seg->hdr->n_children + 1, &s->t);
    ring_stats(seg->ring, &s->q);
    s->at_us = clock_mono_us();
}

static int64_t outcomes(const struct metric_totals *t)
{
    const int64_t *c = t->counters;
    return c[METRIC_tx_applied_deposit] + c[METRIC_tx_applied_withdrawal] + c[METRIC_tx_insufficient_funds] +
           c[METRIC_tx_unknown_account] + c[METRIC_tx_rejected];
}

static double rate(int64_t now, int64_t before, const struct sample *a, const struct sample *b)
{
    double dt = (double)(b->at_us - a->at_us) / 1e6;
    return dt > 0 ? (double)(now - before) / dt : 0.0;
}

static void draw_bar(uint64_t used, uint64_t cap)
{
    int width = 40, fill = cap ? (int)((double)used / (double)cap * width + 0.5) : 0;
    if (used > 0 && fill == 0)
        fill = 1;
    putchar('[');
    for (int i = 0; i < width; i++)
        putchar(i < fill ? '#' : '.');
    putchar(']');
}

static void draw_screen(const struct shm_seg *seg, const struct sample *a, const struct sample *b)
{
    const int64_t *c = b->t.counters, *p = a->t.counters;
    char when[25];
    clock_format_iso(clock_wall_us(), when);
    char listen[4 * sizeof seg->hdr->params.listen + 1];
    shm_printable(seg->hdr->params.listen, sizeof seg->hdr->params.listen, listen, sizeof listen);
    printf("\x1b[H\x1b[2J");
    char node[24] = "";
    if (seg->hdr->params.node_id != 0)
        snprintf(node, sizeof node, "  node %u", seg->hdr->params.node_id);
    printf("txprocd %s%s  master pid %d  up %.0fs  %s\n\n", listen, node, seg->hdr->master_pid,
           (double)(clock_wall_us() - seg->hdr->started_at_us) / 1e6, when);
    printf("requests %12lld %9.1f/s   accepted %12lld %9.1f/s\n", (long long)c[METRIC_http_requests],
           rate(c[METRIC_http_requests], p[METRIC_http_requests], a, b), (long long)c[METRIC_tx_accepted],
           rate(c[METRIC_tx_accepted], p[METRIC_tx_accepted], a, b));
    printf("applied  %12lld %9.1f/s   queue full %10lld   invalid %lld\n", (long long)outcomes(&b->t),
           rate(outcomes(&b->t), outcomes(&a->t), a, b), (long long)c[METRIC_tx_queue_full],
           (long long)c[METRIC_http_bad_request]);
    printf("outcomes deposits %lld  withdrawals %lld  insufficient %lld  unknown %lld  rejected %lld  "
           "replayed %lld\n", (long long)c[METRIC_tx_applied_deposit], (long long)c[METRIC_tx_applied_withdrawal],
           (long long)c[METRIC_tx_insufficient_funds], (long long)c[METRIC_tx_unknown_account],
           (long long)c[METRIC_tx_rejected], (long long)c[METRIC_tx_replayed]);
    printf("latency  p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  max %.3f ms (enqueue to commit)\n",
           (double)metrics_percentile(&b->t, 0.5) / 1e3, (double)metrics_percentile(&b->t, 0.9) / 1e3,
           (double)metrics_percentile(&b->t, 0.99) / 1e3, (double)metrics_max(&b->t) / 1e3);
    printf("queue    ");
    draw_bar(b->q.depth + b->q.claimed, b->q.capacity);
    printf(" %llu/%llu  claimed %llu  high-water %llu\n\n", (unsigned long long)(b->q.depth + b->q.claimed),
           (unsigned long long)b->q.capacity, (unsigned long long)b->q.claimed,
           (unsigned long long)b->q.high_water);
    printf("%-5s %-9s %-6s %-8s %-9s %-9s %s\n", "slot", "role", "index", "pid", "state", "restarts", "uptime");
    int64_t now = clock_wall_us();
    for (uint32_t i = 0; i < seg->hdr->n_children; i++) {
        const struct shm_child *ch = &seg->children[i];
        printf("%-5u %-9s %-6d %-8d %-9s %-9u %.0fs\n", i, stats_role_name(ch->role), ch->index, ch->pid,
               stats_state_name(ch->state), ch->restarts,
               ch->pid > 0 ? (double)(now - ch->started_at_us) / 1e6 : 0.0);
    }
    printf("\nq: quit\n");
    fflush(stdout);
}

static void print_line(const struct shm_seg *seg, const struct sample *a, const struct sample *b)
{
    char when[25];
    clock_format_iso(clock_wall_us(), when);
    unsigned running = 0;
    for (uint32_t i = 0; i < seg->hdr->n_children; i++)
        running += seg->children[i].state == CHILD_RUNNING;
    printf("txprocd %s requests %lld accepted %lld applied %lld (%.1f/s) queue %llu/%llu p99 %.3f ms "
           "children %u/%u running\n", when, (long long)b->t.counters[METRIC_http_requests],
           (long long)b->t.counters[METRIC_tx_accepted], (long long)outcomes(&b->t),
           rate(outcomes(&b->t), outcomes(&a->t), a, b), (unsigned long long)(b->q.depth + b->q.claimed),
           (unsigned long long)b->q.capacity, (double)metrics_percentile(&b->t, 0.99) / 1e3, running,
           seg->hdr->n_children);
    fflush(stdout);
}

/* Waits up to ms for a key; returns 1 if it was 'q' (terminal mode only). */
static int wait_for_quit(int tty, int ms)
{
    if (!tty) {
        struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
        return 0;
    }
    struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
    if (poll(&pfd, 1, ms) > 0) {
        char ch;
        if (read(STDIN_FILENO, &ch, 1) == 1 && (ch == 'q' || ch == 'Q'))
            return 1;
    }
    return 0;
}

int top_run(const struct shm_seg *seg, int iterations, double interval_s)
{
    int tty = isatty(STDOUT_FILENO) && isatty(STDIN_FILENO);
    struct termios saved, raw;
    if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
        raw = saved;
        raw.c_lflag &= (tcflag_t) ~(ICANON | ECHO);
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
        printf("\x1b[?25l"); /* hide the cursor while redrawing */
    } else {
        tty = 0;
    }
    struct sigaction sa = { .sa_handler = on_interrupt };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    static struct sample a, b; /* large: histograms */
    take(seg, &a);
    int ms = (int)(interval_s * 1000);
    for (int n = 0; iterations <= 0 || n < iterations; n++) {
        if (wait_for_quit(tty, ms) || top_interrupted)
            break;
        take(seg, &b);
        if (tty)
            draw_screen(seg, &a, &b);
        else
            print_line(seg, &a, &b);
        a = b;
    }
    if (tty) {
        printf("\x1b[?25h\n");
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    }
    return 0;
}
