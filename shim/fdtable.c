/*
 * fdtable.c — a sandboxed owngil context gets a file descriptor table of its own.
 *
 * Threads share the process's fd table, and neither seccomp nor Landlock can tell whose an
 * fd is: Landlock checks paths when they are opened, so without this a sandboxed context
 * could os.pread() a file Bun has open, accept() on Bun.serve's listening socket, or read
 * another client's connection, just by trying numbers. unshare(CLONE_FILES) on the context
 * thread, first thing, gives it a copy of the table; every copied fd is then closed except
 * stdio and the read ends of the context's own wake-up pipes, made before its thread
 * started, which other threads write to wake it (wake, alert, answers, signals; wakefd.c).
 * Bun's eventfds are closed too: a doorbell rung here would write one by its number, which
 * is why the context's doorbells are rung by a thread of its own in the shared table
 * (bell.c).
 * Threads the context starts share its table.
 *
 * From then on an fd number means one thing on the context's threads and another on Bun's:
 *   - nothing may pass an fd number between the two (bunpy refuses what would: pool.listen
 *     and hand-offs, async_call waited on a foreign loop; see docs/sandbox.md);
 *   - every fd another thread writes to wake this context is the write end of one of the
 *     pipes made before the thread started (wake, alert, answers, signals), which only
 *     Bun's table holds: request.c's interrupt wakes a loop through the context's wake
 *     pipe, not the loop's own fd;
 *   - process signals are blocked on these threads, so no handler (bunpy's SIGINT/SIGTERM
 *     relay, or Bun's own) runs here and writes its fd number into this table.
 */
#include "internal.h"
#include "context.h"
#include "kernel-rules.h"
#include <dirent.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int is_kept(const bp_context *c, int fd) {
    /* the read ends only: a pipe's write end is left to Bun's table (wakefd.c) */
    return fd <= 2 || fd == c->wake.rd || fd == c->alert.rd || fd == c->answers.rd || fd == c->sig.rd;
}

int bp_fds_isolate(bp_context *c) {
    /* signals first: a handler must not run here once the numbers mean other files */
    sigset_t all;
    sigfillset(&all);
    const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT};
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) sigdelset(&all, faults[i]);
    if (pthread_sigmask(SIG_BLOCK, &all, NULL) != 0) return -1;
    if (unshare(CLONE_FILES) != 0) return -1;
    /* /proc is readable here: Landlock comes later (kernel-rules.h). Without it the open
       fds could not be listed, and the context does not start. */
    DIR *d = opendir("/proc/thread-self/fd");
    if (!d) return -1;
    int own = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end || end == e->d_name || fd == own || is_kept(c, (int)fd)) continue;
        close((int)fd);
    }
    closedir(d);
    return 0;
}
