/*
 * descendants.h — ending every process a process context's host started (used by
 * relay.c in Bun and by host.c in bunpy-host; header-only, like channel.h, because the
 * host links no libbunpy).
 *
 * The host is spawned as a process-group leader and its group is killed with it, but
 * Python code leaves the group easily: subprocess.Popen(start_new_session=True), a
 * daemon's double fork and setsid(). The host makes itself a child subreaper
 * (PR_SET_CHILD_SUBREAPER), so while it lives every process it started stays below it
 * however it was orphaned, and can be found by walking parent pids in /proc.
 */
#ifndef BP_DESCENDANTS_H
#define BP_DESCENDANTS_H
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

/* pid and parent pid of every live (not zombie) process; their count, or -1 */
static inline int bp_proc_table(pid_t **pids, pid_t **parents) {
    DIR *d = opendir("/proc");
    if (!d) return -1;
    int n = 0, cap = 0;
    *pids = *parents = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        char path[64], stat[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "re");
        if (!f) continue; /* gone meanwhile */
        size_t got = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[got] = 0;
        /* "pid (comm) S ppid ...": comm may hold spaces and parentheses, so the last ')' */
        char *close = strrchr(stat, ')');
        char state;
        long ppid;
        if (!close || sscanf(close + 1, " %c %ld", &state, &ppid) != 2 || state == 'Z') continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            pid_t *p = realloc(*pids, cap * sizeof *p), *q = p ? realloc(*parents, cap * sizeof *q) : NULL;
            if (p) *pids = p;
            if (!p || !q) {
                closedir(d);
                return -1;
            }
            *parents = q;
        }
        (*pids)[n] = (pid_t)pid;
        (*parents)[n++] = (pid_t)ppid;
    }
    closedir(d);
    return n;
}

/* SIGKILLs every live descendant of `root` (not root). A pass can miss a process forked
   after its walk, so it walks again until a pass kills nothing (at most 16 passes).
   Returns how many it killed. */
static inline int bp_kill_descendants(pid_t root) {
    int killed = 0;
    for (int pass = 0; pass < 16; pass++) {
        pid_t *pids, *parents;
        int n = bp_proc_table(&pids, &parents);
        if (n < 0) {
            free(pids);
            free(parents);
            return killed;
        }
        /* mark below[i] when i's parent is root or marked, until nothing changes */
        char *below = calloc(n ? n : 1, 1);
        int found = 0, changed = below != NULL;
        while (changed) {
            changed = 0;
            for (int i = 0; i < n; i++) {
                if (below[i] || pids[i] == root) continue;
                int up = parents[i] == root;
                for (int j = 0; !up && j < n; j++) up = below[j] && pids[j] == parents[i];
                if (up) below[i] = changed = 1;
            }
        }
        for (int i = 0; below && i < n; i++)
            if (below[i] && kill(pids[i], SIGKILL) == 0) found++;
        free(below);
        free(pids);
        free(parents);
        killed += found;
        if (!found) break;
    }
    return killed;
}

#endif
