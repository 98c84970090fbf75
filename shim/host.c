/*
 * host.c — bunpy-host, the small executable a process context runs Python in (issue 10,
 * item 3). Built by zig next to libbunpy.so; it links no libpython: it loads libpython
 * RTLD_GLOBAL and then the shim with dlopen, as the Bun process does (fact 1).
 *
 * Status: the confinement part is done and tested (`bunpy-host --check`); the serving
 * loop over the channel (channel.h) is not written yet, so `bunpy-host` run by a relay
 * reports that and exits 2.
 *
 *   bunpy-host --check [--memory BYTES] [--cpu SECONDS] [--files N] [--network]
 *       applies the confinement and prints what applied as JSON, then exits 0.
 *
 * Confinement, in the order it must happen (namespaces need a single-threaded process,
 * so everything here runs before Python starts any thread):
 *   1. PR_SET_PDEATHSIG(SIGKILL), checked against the expected parent (no race);
 *   2. every inherited fd above the channel closed, stdin from /dev/null;
 *   3. bp_host_confine(): namespaces (user + net + mount, falling back to net + mount,
 *      then none), a private /tmp (tmpfs) when the mount namespace exists, rlimits.
 *      This is the one call the kernel rules of item 1 (Landlock, seccomp) are meant to
 *      join, applied to the whole process.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "channel.h"

typedef struct bp_host_limits {
    uint64_t memory;   /* RLIMIT_AS in bytes (0: unchanged)                 */
    uint64_t cpu;      /* RLIMIT_CPU in seconds (0: unchanged)              */
    uint64_t files;    /* RLIMIT_NOFILE (0: unchanged)                      */
    int network;       /* 1: keep the parent's network; 0: own, empty netns */
    int private_tmp;   /* 1: a private tmpfs on /tmp when the kernel allows  */
} bp_host_limits;

typedef struct bp_host_applied {
    int userns, netns, mountns, tmp;
    int rlimit_errors; /* how many of the requested rlimits could not be set */
} bp_host_applied;

/* Writes "0 <id> 1"-style maps so the process keeps its uid/gid inside the user
   namespace (root keeps reading root-owned files). */
static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

static void map_ids(uid_t uid, gid_t gid) {
    char buf[64];
    write_file("/proc/self/setgroups", "deny");
    snprintf(buf, sizeof buf, "%u %u 1\n", (unsigned)uid, (unsigned)uid);
    write_file("/proc/self/uid_map", buf);
    snprintf(buf, sizeof buf, "%u %u 1\n", (unsigned)gid, (unsigned)gid);
    write_file("/proc/self/gid_map", buf);
}

static int set_limit(int resource, uint64_t value) {
    if (!value) return 0;
    struct rlimit rl = {.rlim_cur = value, .rlim_max = value};
    return setrlimit(resource, &rl) == 0 ? 0 : 1;
}

/* The one function that confines the host process; see the header comment. */
static bp_host_applied bp_host_confine(const bp_host_limits *lim) {
    bp_host_applied a = {0};
    uid_t uid = getuid();
    gid_t gid = getgid();
    int net = lim->network ? 0 : CLONE_NEWNET;
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS | net) == 0) {
        a.userns = 1;
        map_ids(uid, gid);
    } else if (unshare(CLONE_NEWNS | net) != 0) {
        net = 0; /* neither: no namespaces at all (documented fallback) */
        goto limits;
    }
    a.mountns = 1;
    a.netns = net != 0;
    /* keep our mounts out of the parent's namespace, then a private /tmp */
    if (lim->private_tmp && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
        mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") == 0)
        a.tmp = 1;
limits:
    a.rlimit_errors = set_limit(RLIMIT_AS, lim->memory) + set_limit(RLIMIT_CPU, lim->cpu) +
                      set_limit(RLIMIT_NOFILE, lim->files);
    return a;
}

/* Closes every fd above `keep` (and between 2 and keep): the host inherits Bun's. */
static void close_inherited(int keep) {
#ifdef SYS_close_range
    if (keep > 3) syscall(SYS_close_range, 3, keep - 1, 0);
    if (syscall(SYS_close_range, keep + 1, ~0U, 0) == 0) return;
#endif
    for (int fd = 3; fd < 65536; fd++)
        if (fd != keep) close(fd);
}

static uint64_t number_arg(const char *s) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s ? s : "", &end, 10);
    if (errno || !s || *end) {
        fprintf(stderr, "bunpy-host: not a number: %s\n", s ? s : "(missing)");
        exit(64);
    }
    return v;
}

int main(int argc, char **argv) {
    bp_host_limits lim = {.network = 0, .private_tmp = 1};
    int check = 0;
    long parent = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--check")) check = 1;
        else if (!strcmp(a, "--memory")) lim.memory = number_arg(argv[++i]);
        else if (!strcmp(a, "--cpu")) lim.cpu = number_arg(argv[++i]);
        else if (!strcmp(a, "--files")) lim.files = number_arg(argv[++i]);
        else if (!strcmp(a, "--network")) lim.network = 1;
        else if (!strcmp(a, "--shared-tmp")) lim.private_tmp = 0;
        else if (!strcmp(a, "--parent")) parent = (long)number_arg(argv[++i]);
        else {
            fprintf(stderr, "bunpy-host: unknown option %s\n", a);
            return 64;
        }
    }
    /* dies with the thread that started it; a parent already gone is caught here */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (parent && getppid() != parent) return 1;
    close_inherited(check ? 2 : BP_HOST_FD);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    bp_host_applied a = bp_host_confine(&lim);
    if (check) {
        struct rlimit as;
        getrlimit(RLIMIT_AS, &as);
        printf("{\"userns\":%s,\"netns\":%s,\"mountns\":%s,\"tmp\":\"%s\",\"rlimitErrors\":%d,\"memory\":%llu}\n",
               a.userns ? "true" : "false", a.netns ? "true" : "false", a.mountns ? "true" : "false",
               a.tmp ? "private" : "shared", a.rlimit_errors,
               as.rlim_cur == RLIM_INFINITY ? 0ULL : (unsigned long long)as.rlim_cur);
        return 0;
    }
    fprintf(stderr, "bunpy-host: the process-context relay is not implemented yet\n");
    return 2;
}
