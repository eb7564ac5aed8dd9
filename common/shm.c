/* Creating, adopting and attaching the shared segment described in shm.h.
 * The rules that keep money safe live here: a segment of a live instance is
 * never touched, a segment holding pending entries is never dropped unless
 * the operator says so, and an abandoned one is adopted in place so its
 * queued and claimed entries are applied by the new instance. */
#include "common/shm.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/check.h"
#include "common/clock.h"
#include "common/flockwait.h"
#include "common/log.h"

#define ALIGN64(x) (((x) + 63u) & ~(size_t)63u)

struct shm_layout {
    size_t children_off, metrics_off, history_off, completions_off, ring_off, ring_bytes, total;
    uint32_t n_children;
};

static void shm_compute_layout(const struct shm_params *p, struct shm_layout *l)
{
    l->n_children = p->n_frontends + p->n_workers;
    l->children_off = ALIGN64(sizeof(struct shm_header));
    l->metrics_off = l->children_off + ALIGN64(sizeof(struct shm_child) * l->n_children);
    l->history_off = l->metrics_off + sizeof(struct metric_block) * (l->n_children + 1);
    l->completions_off = ALIGN64(l->history_off + sizeof(struct shm_history));
    l->ring_off = ALIGN64(l->completions_off + completion_bytes(p->n_frontends, p->n_workers));
    l->ring_bytes = ring_bytes(p->queue_capacity, p->n_workers, p->batch_max);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    l->total = (l->ring_off + l->ring_bytes + page - 1) / page * page;
}

void shm_printable(const char *field, size_t cap, char *out, size_t outlen)
{
    ASSERT(outlen >= 5);
    size_t o = 0;
    for (size_t i = 0; i < cap && field[i] != '\0'; i++) {
        unsigned char c = (unsigned char)field[i];
        int wide = c < 0x20 || c > 0x7e || c == '\\';
        if (o + (wide ? 4 : 1) >= outlen)
            break;
        if (wide)
            o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
}

void shm_default_name(char *buf, size_t len, unsigned port)
{
    snprintf(buf, len, "/txprocd-%u", port);
}

static void shm_seg_reset(struct shm_seg *seg)
{
    memset(seg, 0, sizeof *seg);
    seg->fd = -1;
    for (size_t i = 0; i < SHM_MAX_CHILDREN; i++)
        seg->notify_fd[i] = -1;
}

static void shm_bind_views(struct shm_seg *seg, void *base, size_t size)
{
    struct shm_header *h = base;
    seg->hdr = h;
    seg->size = size;
    seg->children = (struct shm_child *)((char *)base + h->children_off);
    seg->metrics = (struct metric_block *)((char *)base + h->metrics_off);
    seg->history = (struct shm_history *)((char *)base + h->history_off);
    seg->completions = (char *)base + h->completions_off;
    seg->ring = (struct ring *)((char *)base + h->ring_off);
}

/* Checks that the header describes a layout that fits in size bytes. */
static int shm_header_sane(const struct shm_header *h, size_t size, char *why, size_t why_len)
{
    if (size < sizeof *h || h->magic != SHM_MAGIC) {
        snprintf(why, why_len, "not a txprocd segment (bad magic)");
        return -1;
    }
    if (h->layout_version != SHM_LAYOUT_VERSION) {
        snprintf(why, why_len, "layout version %u, this build uses %u", h->layout_version,
                 SHM_LAYOUT_VERSION);
        return -2;
    }
    struct shm_layout l;
    shm_compute_layout(&h->params, &l);
    if (h->header_size != sizeof *h || h->total_size != size || l.total != size ||
        h->children_off != l.children_off || h->metrics_off != l.metrics_off ||
        h->history_off != l.history_off ||
        h->completions_off != l.completions_off || h->ring_off != l.ring_off || h->ring_bytes != l.ring_bytes ||
        h->n_children != l.n_children || l.n_children > SHM_MAX_CHILDREN) {
        snprintf(why, why_len, "header sizes do not match its own layout (corrupt or truncated)");
        return -1;
    }
    return 0;
}

/* The ring must be the one the header's parameters describe, and valid in
 * itself (ring_validate; layout_only for a live segment whose positions
 * move under a reader). */
static int shm_ring_sane(const struct shm_header *h, int layout_only, char *why, size_t why_len)
{
    const struct ring *r = (const struct ring *)((const char *)h + h->ring_off);
    if (ring_validate(r, h->ring_bytes, layout_only, why, why_len) != 0)
        return -1;
    if (r->capacity != h->params.queue_capacity || r->n_slots != h->params.n_workers ||
        r->batch_max != h->params.batch_max) {
        snprintf(why, why_len, "queue geometry (capacity %u, %u slots, batch %u) differs from the "
                 "header's (%u, %u, %u)", r->capacity, r->n_slots, r->batch_max,
                 h->params.queue_capacity, h->params.n_workers, h->params.batch_max);
        return -1;
    }
    return 0;
}

/* "owned by uid 1000 (alice), mode 0666, a regular file" */
static void describe_stat(const struct stat *st, char *buf, size_t len)
{
    const struct passwd *pw = getpwuid(st->st_uid);
    const char *kind = S_ISREG(st->st_mode) ? "a regular file" : S_ISDIR(st->st_mode) ? "a directory"
                     : S_ISFIFO(st->st_mode) ? "a FIFO" : S_ISLNK(st->st_mode) ? "a symbolic link"
                     : "a special file";
    snprintf(buf, len, "owned by uid %u (%s), mode %04o, %s", (unsigned)st->st_uid,
             pw ? pw->pw_name : "no such user", (unsigned)(st->st_mode & 07777), kind);
}

/* 0 if the object behind fd can only be ours: a regular shm object owned by
 * our effective uid with mode 0600. Anyone else who could write it could
 * have queued money or planted offsets in it. */
static int shm_check_ours(int fd, const char *name, char *why, size_t why_len)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, why_len, "fstat: %s", strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode) && st.st_uid == geteuid() && (st.st_mode & 07777) == 0600)
        return 0;
    char desc[160];
    describe_stat(&st, desc, sizeof desc);
    snprintf(why, why_len, "shm %s is %s; this txprocd runs as uid %u and only uses a regular "
             "segment of its own with mode 0600", name, desc, (unsigned)geteuid());
    return -1;
}

/* The segment exists but is not ours (or cannot even be opened). It is
 * never mapped. With --discard-shm it is unlinked, if we may, so a fresh
 * one can be made with O_EXCL; otherwise the operator is told what to do. */
static int shm_refuse_foreign(const char *name, const char *why, int discard)
{
    if (discard) {
        if (shm_unlink(name) == 0 || errno == ENOENT) {
            log_warn("%s; removed it (--discard-shm)", why);
            return 0;
        }
        log_error("%s; --discard-shm cannot remove it: %s (only its owner or root can)", why,
                  strerror(errno));
        return -1;
    }
    log_error("%s. Refusing to adopt it: find out who made it, remove it as its owner or root "
              "(rm /dev/shm%s), or choose another --shm-name", why, name);
    return -1;
}

/* Backs every page of the segment now, so that a /dev/shm too small for it
 * fails here with a message rather than with SIGBUS in whichever process
 * first touches an unbacked page (ftruncate alone makes a sparse object). */
static int shm_reserve(int fd, const char *name, size_t size)
{
    int rc = posix_fallocate(fd, 0, (off_t)size);
    if (rc == 0)
        return 0;
    if (rc == ENOSPC) {
        struct statvfs vfs;
        unsigned long long avail = statvfs("/dev/shm", &vfs) == 0
                                       ? (unsigned long long)vfs.f_bavail * vfs.f_frsize : 0;
        log_error("shm %s needs %.1f MiB but /dev/shm has %.1f MiB free: lower --queue-size (or "
                  "--batch-max, --workers), free /dev/shm, or give the container more "
                  "(docker run --shm-size, compose shm_size)", name, (double)size / 1048576.0,
                  (double)avail / 1048576.0);
    } else {
        log_error("shm %s: cannot reserve %zu bytes: %s", name, size, strerror(rc));
    }
    return -1;
}

static void shm_reset_children(struct shm_seg *seg, const struct shm_params *p)
{
    for (uint32_t i = 0; i < seg->hdr->n_children; i++) {
        struct shm_child *c = &seg->children[i];
        memset(c, 0, sizeof *c);
        c->role = i < p->n_frontends ? ROLE_FRONTEND : ROLE_WORKER;
        c->index = (int32_t)(i < p->n_frontends ? i : i - p->n_frontends);
        c->state = CHILD_EMPTY;
        c->last_exit = INT32_MIN;
    }
}

static int shm_create(struct shm_seg *seg, const char *name, const struct shm_params *p,
                      const struct shm_txids *ids)
{
    uint64_t first = ids->reserve != NULL ? ids->reserve(ids->arg) : ids->floor;
    if (first == 0)
        return -1; /* the reservation logged why */
    struct shm_layout l;
    shm_compute_layout(p, &l);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        log_error("shm_open(%s): %s%s", name, strerror(errno),
                  errno == EEXIST ? " (made by someone else just now; not touching it)" : "");
        return -1;
    }
    void *base = MAP_FAILED;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 || fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)l.total) != 0) {
        log_error("shm %s: cannot lock/size segment to %zu bytes: %s", name, l.total, strerror(errno));
        goto fail;
    }
    if (shm_reserve(fd, name, l.total) != 0)
        goto fail;
    base = mmap(NULL, l.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        log_error("mmap(%s, %zu bytes): %s", name, l.total, strerror(errno));
        goto fail;
    }
    struct shm_header *h = base; /* ftruncate zero-filled everything */
    h->layout_version = SHM_LAYOUT_VERSION;
    h->header_size = sizeof *h;
    h->total_size = l.total;
    h->created_at_us = clock_wall_us();
    h->n_children = l.n_children;
    h->params = *p;
    h->children_off = l.children_off;
    h->metrics_off = l.metrics_off;
    h->history_off = l.history_off;
    h->completions_off = l.completions_off;
    h->ring_off = l.ring_off;
    h->ring_bytes = l.ring_bytes;
    shm_bind_views(seg, base, l.total);
    if (ring_init(seg->ring, l.ring_bytes, p->queue_capacity, p->n_workers, p->batch_max, first,
                  ids->stride) != 0) {
        log_error("shm %s: cannot number transactions from %llu by %u", name,
                  (unsigned long long)first, ids->stride);
        goto fail;
    }
    shm_reset_children(seg, p);
    __atomic_store_n(&h->magic, SHM_MAGIC, __ATOMIC_RELEASE); /* valid from here on */
    seg->fd = fd;
    return 0;
fail:
    if (base != MAP_FAILED)
        munmap(base, l.total);
    close(fd);
    shm_unlink_name(name);
    return -1;
}

/* Takes the instance lock of an existing segment, waiting briefly for the
 * children of a just-killed master to finish dying. */
static int shm_lock_abandoned(int fd, const char *name)
{
    if (flock_wait(fd, FLOCK_WAIT_MS) == 0)
        return 0;
    struct shm_header h;
    ssize_t got = pread(fd, &h, sizeof h, 0);
    log_error("shm %s is in use by a running txprocd (master pid %d); stop it or choose another "
              "--shm-name", name, got == (ssize_t)sizeof h ? h.master_pid : -1);
    return -1;
}

static int params_match(const struct shm_params *a, const struct shm_params *b)
{
    return a->queue_capacity == b->queue_capacity && a->batch_max == b->batch_max &&
           a->n_frontends == b->n_frontends && a->n_workers == b->n_workers &&
           a->node_id == b->node_id && strcmp(a->db_path, b->db_path) == 0;
}

/* Maps the abandoned segment and decides: adopt (1), replace (0), refuse (-1). */
static int shm_try_adopt(struct shm_seg *seg, int fd, const char *name, const struct shm_params *p,
                         const struct shm_txids *ids, int discard)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        log_error("fstat(%s): %s", name, strerror(errno));
        return -1;
    }
    size_t size = (size_t)st.st_size;
    void *base = size ? mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    char why[256];
    int sane = base == MAP_FAILED ? -1 : shm_header_sane(base, size, why, sizeof why);
    if (base == MAP_FAILED)
        snprintf(why, sizeof why, "empty or unmappable (%zu bytes)", size);
    else if (sane == 0)
        sane = shm_ring_sane(base, 0, why, sizeof why);
    if (sane != 0) {
        if (base != MAP_FAILED)
            munmap(base, size);
        if (discard) {
            log_warn("shm %s: discarding abandoned segment: %s (--discard-shm)", name, why);
            return 0;
        }
        log_error("shm %s: abandoned segment cannot be adopted: %s; its queued transactions "
                  "are NOT recovered. Start with --discard-shm to drop it deliberately", name, why);
        return -1;
    }
    shm_bind_views(seg, base, size);
    struct ring *r = seg->ring;
    if (shm_reserve(fd, name, size) != 0) {
        munmap(base, size);
        return -1;
    }
    uint64_t requeued = ring_recover(r);
    uint64_t pending = ring_pending(r);
    int compatible = params_match(&seg->hdr->params, p) && ring_next_txid(r) >= ids->floor &&
                     ring_txid_stride(r) == ids->stride;
    if (compatible) {
        log_info("shm %s: adopted abandoned segment of pid %d: %llu entries pending "
                 "(%llu requeued from unacknowledged claims)", name, seg->hdr->master_pid,
                 (unsigned long long)pending, (unsigned long long)requeued);
        seg->hdr->adoptions++;
        shm_reset_children(seg, p);
        /* Nobody waits for an outcome of the dead instance: start every
         * completion ring empty, whatever positions it was left with. */
        for (uint32_t f = 0; f < p->n_frontends; f++)
            for (uint32_t w = 0; w < p->n_workers; w++) {
                struct completion_ring *cr = shm_completions(seg, f, w);
                cr->head = 0;
                cr->tail = 0;
            }
        seg->fd = fd;
        return 1;
    }
    const struct shm_params *old = &seg->hdr->params;
    if (pending > 0 && !discard) {
        char node[24] = "";
        if (old->node_id != 0)
            snprintf(node, sizeof node, " --node-id %u", old->node_id);
        log_error("shm %s holds %llu pending transactions from a previous run with --queue-size %u "
                  "--batch-max %u --frontends %u --workers %u%s --db %s; start with those settings "
                  "to apply them, or --discard-shm to drop them", name, (unsigned long long)pending,
                  old->queue_capacity, old->batch_max, old->n_frontends, old->n_workers, node,
                  old->db_path);
        munmap(base, size);
        return -1;
    }
    if (pending > 0)
        log_warn("shm %s: discarding %llu pending transactions (--discard-shm)", name,
                 (unsigned long long)pending);
    munmap(base, size);
    return 0;
}

int shm_open_master(struct shm_seg *seg, const char *name, const struct shm_params *params,
                    const struct shm_txids *txids, int discard, enum shm_open_result *result)
{
    shm_seg_reset(seg);
    seg->writable = 1;
    snprintf(seg->name, sizeof seg->name, "%s", name);
    struct shm_txids ids = *txids;
    if (ids.floor == 0)
        ids.floor = 1;

    char why[384];
    int fd = shm_open(name, O_RDWR, 0); /* O_NOFOLLOW: glibc adds it */
    if (fd < 0 && errno != ENOENT) {
        int err = errno;
        struct stat st;
        char path[96], desc[160] = "of unknown owner";
        snprintf(path, sizeof path, "/dev/shm%s", name);
        if (lstat(path, &st) == 0)
            describe_stat(&st, desc, sizeof desc);
        snprintf(why, sizeof why, "shm %s cannot be opened (%s): it is %s", name, strerror(err), desc);
        if (shm_refuse_foreign(name, why, discard) != 0)
            return -1;
    } else if (fd >= 0 && shm_check_ours(fd, name, why, sizeof why) != 0) {
        close(fd);
        if (shm_refuse_foreign(name, why, discard) != 0)
            return -1;
    } else if (fd >= 0) {
        if (shm_lock_abandoned(fd, name) != 0) {
            close(fd);
            return -1;
        }
        int adopt = shm_try_adopt(seg, fd, name, params, &ids, discard);
        if (adopt < 0) {
            close(fd);
            return -1;
        }
        if (adopt == 1) {
            *result = SHM_ADOPTED;
            goto ready;
        }
        /* Replace: unlink while still holding the old lock, so a racing
         * master cannot adopt what we are about to drop. */
        int gone = shm_unlink_name(name);
        close(fd);
        if (gone != 0)
            return -1;
    }
    if (shm_create(seg, name, params, &ids) != 0)
        return -1;
    *result = SHM_CREATED;
ready:
    seg->hdr->master_pid = (int32_t)getpid();
    seg->hdr->started_at_us = clock_wall_us();
    seg->hdr->master_state = MASTER_STARTING;
    return 0;
}

int shm_attach_readonly(struct shm_seg *seg, const char *name, char *why, size_t why_len)
{
    shm_seg_reset(seg);
    snprintf(seg->name, sizeof seg->name, "%s", name);
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0) {
        if (errno == ENOENT)
            snprintf(why, why_len, "no txprocd running: shared memory segment %s does not exist", name);
        else
            snprintf(why, why_len, "cannot open shared memory segment %s: %s", name, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(why, why_len, "fstat(%s): %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, why_len, "%s is not a shared memory segment", name);
        close(fd);
        return -1;
    }
    if (st.st_uid != geteuid() && geteuid() != 0) {
        snprintf(why, why_len, "segment %s belongs to uid %u, not to you (uid %u); refusing to read it",
                 name, (unsigned)st.st_uid, (unsigned)geteuid());
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    void *base = size ? mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (base == MAP_FAILED) {
        snprintf(why, why_len, "segment %s is empty or cannot be mapped", name);
        close(fd);
        return -1;
    }
    char reason[256];
    if (shm_header_sane(base, size, reason, sizeof reason) != 0 ||
        shm_ring_sane(base, 1, reason, sizeof reason) != 0) {
        snprintf(why, why_len, "segment %s: %s", name, reason);
        munmap(base, size);
        close(fd);
        return -1;
    }
    shm_bind_views(seg, base, size);
    seg->fd = fd;
    return 0;
}

int shm_instance_alive(const struct shm_seg *seg)
{
    if (flock(seg->fd, LOCK_SH | LOCK_NB) == 0) {
        flock(seg->fd, LOCK_UN);
        return 0;
    }
    return 1;
}

void shm_close(struct shm_seg *seg)
{
    if (seg->hdr != NULL)
        munmap(seg->hdr, seg->size);
    if (seg->fd >= 0)
        close(seg->fd);
    seg->hdr = NULL;
    seg->fd = -1;
}

int shm_unlink_name(const char *name)
{
    if (shm_unlink(name) != 0 && errno != ENOENT) {
        log_error("shm_unlink(%s): %s", name, strerror(errno));
        return -1;
    }
    return 0;
}
