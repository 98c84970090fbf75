/*
 * wakefd.c — the fds other threads write to wake a context's thread (wake, alert, answers,
 * signals).
 *
 * A plain context gets an eventfd: the same fd is read by the context and written by
 * everyone else. A sandboxed owngil context (own_fds, fdtable.c) gets a pipe instead, and
 * only the read end stays in its fd table. The reason is O_NONBLOCK: it belongs to the open
 * file, not to the fd, and an eventfd is one open file for both sides. Code in the context
 * could clear it on its own eventfd and fill the counter, and the next Bun thread that
 * wrote it to wake the context (close() alerting a bunpy.sleep, a signal handler) blocked
 * for good. A pipe's write end is an open file of its own which the context never holds,
 * so it stays non-blocking whatever the context does to the read end; a full pipe means
 * the context is already woken, and the write gives up (EAGAIN).
 */
#include "internal.h"
#include "context.h"
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

int bp_wakefd_open(bp_wakefd *w, int pipe_for_own_table) {
    if (pipe_for_own_table) {
        int p[2];
        if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) {
            w->rd = w->wr = -1;
            return -1;
        }
        w->rd = p[0];
        w->wr = p[1];
        return 0;
    }
    w->rd = w->wr = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return w->rd < 0 ? -1 : 0;
}

void bp_wakefd_close(bp_wakefd *w) {
    if (w->wr >= 0 && w->wr != w->rd) close(w->wr);
    if (w->rd >= 0) close(w->rd);
    w->rd = w->wr = -1;
}

void bp_wakefd_post(int wr) {
    /* 8 bytes: what an eventfd takes; a pipe takes them in one piece or not at all */
    uint64_t one = 1;
    ssize_t n = write(wr, &one, sizeof one);
    (void)n;
}

void bp_wakefd_drain(int rd, int own_table) {
    /* An eventfd hands over its whole counter in one read; a pipe may hold more. Bounded:
       the other end may write faster than this reads (a process host holds the write end
       of Bun's bell), and a reader that never returned would never look at anything else
       (the relay's kill deadline). What is left wakes the next poll. */
    uint64_t buf[512];
    if (!own_table) {
        for (int i = 0; i < 4 && read(rd, buf, sizeof buf) == (ssize_t)sizeof buf; i++) {
        }
        return;
    }
    /* In a table of the context's own, the number may now name a file the context made
       blocking, or another file altogether (dup2): read only what poll says is there, so
       this thread never blocks in read() on it. What it missed, the bounded waits catch
       (BP_OWN_FDS_WAIT_MS). */
    for (int i = 0; i < 4; i++) {
        struct pollfd p = {.fd = rd, .events = POLLIN};
        if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN)) return;
        if (read(rd, buf, sizeof buf) != (ssize_t)sizeof buf) return;
    }
}
