/*
 * descendants.h — ending every process a process context's host started (relay.c's
 * reap_host; header-only, like channel.h).
 *
 * The host is spawned as a process-group leader and its group is killed with it, but
 * Python code leaves the group easily: subprocess.Popen(start_new_session=True), a
 * daemon's double fork and setsid(). The host makes itself a child subreaper
 * (PR_SET_CHILD_SUBREAPER, host.c), so while it lives every process it started stays below
 * it however it was orphaned, and can be found by walking parent pids in /proc. The relay
 * stops the host (SIGSTOP: it neither starts nor reaps processes meanwhile) and then calls
 * bp_kill_descendants.
 *
 * Not covered: a process made with clone(CLONE_PARENT) (a child of Bun, not of the host),
 * and what the host started when Bun exits without closing it (the host dies by its
 * parent-death signal; the processes that left its group then belong to init).
 */
#ifndef BP_DESCENDANTS_H
#define BP_DESCENDANTS_H
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

typedef struct bp_proc {
    pid_t pid, ppid;
    int below; /* 0: not known yet, 1: below the root, 2: not */
} bp_proc;

/* The parent pid of a live (not zombie) process, or -1. */
static inline pid_t bp_proc_parent(pid_t pid) {
    char path[64], stat[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) return -1; /* gone */
    size_t got = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[got] = 0;
    /* "pid (comm) S ppid ...": comm may hold spaces and parentheses, so the last ')' */
    char *close = strrchr(stat, ')');
    char state;
    long ppid;
    if (!close || sscanf(close + 1, " %c %ld", &state, &ppid) != 2 || state == 'Z') return -1;
    return (pid_t)ppid;
}

static inline int bp_proc_order(const void *a, const void *b) {
    pid_t x = ((const bp_proc *)a)->pid, y = ((const bp_proc *)b)->pid;
    return (x > y) - (x < y);
}

/* Every live process, sorted by pid (readdir gives /proc in pid order already); their
   count, or -1 (*out is then NULL). */
static inline int bp_proc_table(bp_proc **out) {
    *out = NULL;
    DIR *d = opendir("/proc");
    if (!d) return -1;
    int n = 0, cap = 0, sorted = 1;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        pid_t ppid = bp_proc_parent((pid_t)pid);
        if (ppid < 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            bp_proc *t = realloc(*out, (size_t)cap * sizeof *t);
            if (!t) {
                free(*out);
                *out = NULL;
                closedir(d);
                return -1;
            }
            *out = t;
        }
        if (n > 0 && (*out)[n - 1].pid >= (pid_t)pid) sorted = 0;
        (*out)[n++] = (bp_proc){.pid = (pid_t)pid, .ppid = ppid, .below = 0};
    }
    closedir(d);
    if (!sorted) qsort(*out, (size_t)n, sizeof **out, bp_proc_order);
    return n;
}

static inline bp_proc *bp_proc_find(bp_proc *t, int n, pid_t pid) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (t[mid].pid == pid) return &t[mid];
        if (t[mid].pid < pid) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

/* Marks every entry below `root` or not: each entry is decided once, walking up its parents
   until an entry already decided, the root, or a pid not in the table (O(n log n)). A walk
   longer than the table is a cycle a racy snapshot can show: not below. */
static inline void bp_proc_mark(bp_proc *t, int n, pid_t root) {
    for (int i = 0; i < n; i++) {
        int verdict = 0, steps = 0;
        bp_proc *at = &t[i];
        while (!verdict && at->below == 0) { /* (at is NULL once a parent is not found) */
            if (at->ppid == root) verdict = 1;
            else if (at->pid == root || ++steps > n || !(at = bp_proc_find(t, n, at->ppid))) verdict = 2;
        }
        if (!verdict) verdict = at->below;
        /* the same walk again, writing the verdict on the way */
        for (bp_proc *w = &t[i]; w && w->below == 0; w = w->ppid == root ? NULL : bp_proc_find(t, n, w->ppid)) {
            w->below = verdict;
            if (w->pid == root) break;
        }
    }
}

/* Kills `pid` if it is still the process whose parent was `ppid`: through a pidfd taken
   before that look, so a pid freed and reused by another process meanwhile is never hit. */
static inline int bp_kill_checked(pid_t pid, pid_t ppid) {
#if defined(SYS_pidfd_open) && defined(SYS_pidfd_send_signal)
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) return 0; /* gone */
    int done = bp_proc_parent(pid) == ppid && syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0) == 0;
    close(fd);
    return done;
#else
    return bp_proc_parent(pid) == ppid && kill(pid, SIGKILL) == 0;
#endif
}

/* SIGKILLs every live descendant of `root` (not root). A pass can miss a process forked
   after its walk or whose parent changed (an orphan moves up to the root), so it walks
   again until a pass finds none (at most 16 passes). Nothing is done when this process's
   /proc is another pid namespace's (its numbers would not be kill()'s). Returns how many
   it killed. */
static inline int bp_kill_descendants(pid_t root) {
    char self[32];
    ssize_t len = readlink("/proc/self", self, sizeof self - 1);
    if (len <= 0) return 0;
    self[len] = 0;
    if (atol(self) != (long)getpid()) return 0;
    int killed = 0;
    for (int pass = 0; pass < 16; pass++) {
        bp_proc *t;
        int n = bp_proc_table(&t);
        if (n < 0) return killed;
        bp_proc_mark(t, n, root);
        int found = 0;
        for (int i = 0; i < n; i++) {
            if (t[i].below != 1) continue;
            found++;
            killed += bp_kill_checked(t[i].pid, t[i].ppid);
        }
        free(t);
        if (!found) break;
    }
    return killed;
}

#endif
