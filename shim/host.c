/*
 * host.c — bunpy-host, the small executable a process context runs Python in (issue 10,
 * item 3). Built by zig next to libbunpy.so; it links no libpython: it loads libpython
 * RTLD_GLOBAL and then the shim with dlopen, as the Bun process does (fact 1).
 *
 *   bunpy-host --check [--memory BYTES] [--cpu SECONDS] [--files N] [--network]
 *       applies the confinement and prints what applied as JSON, then exits 0.
 *   bunpy-host --libpython L --shim S --program PY --python-dir D [limits] --parent PID
 *       (run by relay.c with its end of a socketpair on fd 3, the shared memory of
 *       ring.h on fd 4, bells (pipes) on 5 and 6) serves one context.
 *
 * Serving: the host starts Python through the shim's exported ABI (bunpy.h) exactly as
 * the Bun process does, creates one worker-mode context from the START frame, and then
 * serves it: SUBMIT/CANCEL/ANSWER/CLOSE frames become bp_ctx_submit / bp_ctx_cancel /
 * bp_call_reply / bp_ctx_close on its own port, and that port's completions, messages
 * and Python -> JS calls become DONE/MESSAGE/CALL frames. SUBMITs come in the request
 * ring, which the context thread reads itself (its feed hook, host_feed); DONE and the
 * others go out in the result ring, written by whoever drains the port (its doorbell,
 * normally the context thread). The main thread runs no Python and is woken only for
 * socket frames, the close, and requests that came while the context thread slept.
 * When the channel ends (the Bun process, or its relay, is gone) the host exits at once.
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
#include <dlfcn.h>
#include <malloc.h>
#include <poll.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <time.h>
#include "bunpy.h"
#include "ring.h"
#include <sys/mman.h>
#include <sys/stat.h>

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

/* Closes every fd above `last`: the host inherits Bun's. */
static void close_inherited(int last) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, last + 1, ~0U, 0) == 0) return;
#endif
    for (int fd = last + 1; fd < 65536; fd++) close(fd);
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


/* ---- serving one context over the channel ----------------------------------------- */

/* The shim's exported functions (bunpy.h), found with dlsym. */
typedef struct bp_host_api bp_host_api;
struct bp_host_api {
    int32_t (*init)(const char *, const char *, char *, int32_t);
    bp_io *(*io_new)(bp_dispatch_fn);
    void (*set_doorbell)(bp_io *, bp_doorbell_fn);
    int32_t (*poll)(bp_io *, int32_t);
    int32_t (*drain)(bp_io *);
    bp_context *(*ctx_new)(bp_io *, int32_t, uint32_t, uint32_t);
    bp_request *(*submit)(bp_context *, bp_io *, uint32_t, int32_t, uint32_t);
    int32_t (*take_calls)(bp_io *);
    int32_t (*call_reply)(void *, bp_io *, int32_t, uint32_t);
    int32_t (*cancel)(bp_context *, bp_request *);
    int32_t (*close)(bp_context *, bp_io *, uint32_t, uint32_t);
    int32_t (*io_reserve)(bp_io *, uint32_t);
    void (*set_feed)(bp_context *, bp_feed_fn, void *, int32_t);
};

/* One process, one context: these are the host's, not a library's, statics. */
static int bell_fd = -1;
static const struct bp_host_api *host_api;
/* The port, the slot table and the channel's writing end: taken by the main thread while it
   handles frames, and by the context thread in the doorbell. The main thread never takes
   the GIL, so holding this while the context thread holds its GIL cannot deadlock. */
static pthread_mutex_t host_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int host_closed;
static int host_flush(const struct bp_host_api *api, bp_io *io);

/* Rung by the shim (on the context thread, or wherever a completion is delivered) on the
   empty -> non-empty edge: the ringing thread sends the frames itself, which saves the
   main thread's wake-up on every call's way back. */
static void host_doorbell(bp_io *io) {
    pthread_mutex_lock(&host_lock);
    int closed = host_flush(host_api, io);
    pthread_mutex_unlock(&host_lock);
    if (closed) {
        atomic_store(&host_closed, 1);
        uint64_t one = 1;
        ssize_t n = write(bell_fd, &one, sizeof one);
        (void)n;
    }
}
/* The main interpreter of the host never calls JS (the host has none). */
static int32_t host_dispatch(bp_io *io, int32_t target) {
    (void)io;
    (void)target;
    return BP_ERR_STATE;
}

#define START_ID 1u
#define CLOSE_ID 0xffffffffu

/* The requests in flight: host completion id (index) -> the relay's slot and run id. */
typedef struct host_slot {
    uint32_t slot;   /* the relay's */
    uint64_t run;    /* the relay's run id; 0: this entry is free */
    bp_request *req; /* the host's request (for bp_ctx_cancel) */
} host_slot;

static host_slot *slots;
static uint32_t nslots = 2, slots_cap, *free_ids, nfree; /* ids 0 (none) and 1 (start) are not slots */

static uint32_t slot_new(uint32_t slot, uint64_t run) {
    uint32_t id;
    if (nfree) id = free_ids[--nfree];
    else {
        if (nslots >= slots_cap) {
            uint32_t cap = slots_cap ? slots_cap * 2 : 64;
            host_slot *s = realloc(slots, cap * sizeof *s);
            uint32_t *f = realloc(free_ids, cap * sizeof *f);
            if (!s || !f) {
                fprintf(stderr, "bunpy-host: out of memory\n");
                _exit(70);
            }
            slots = s;
            free_ids = f;
            slots_cap = cap;
        }
        id = nslots++;
    }
    slots[id] = (host_slot){.slot = slot, .run = run, .req = NULL};
    return id;
}

static void slot_free(uint32_t id) {
    slots[id].run = 0;
    free_ids[nfree++] = id;
}

/* ---- the shared memory (ring.h): requests in, results out ---------------------------- */

static bp_shm *shm;
static bp_ring req_ring, res_ring; /* we read requests, write results (both under host_lock) */
static bp_context *host_ctx;
static bp_io *host_io;

static void ring_bell(int fd) {
    uint64_t one = 1;
    ssize_t n = write(fd, &one, sizeof one);
    (void)n;
}

static int host_map(void) {
    struct stat st;
    if (fstat(BP_HOST_SHM_FD, &st) < 0 || st.st_size < (off_t)BP_SHM_SIZE) return -1;
    void *m = mmap(NULL, BP_SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, BP_HOST_SHM_FD, 0);
    close(BP_HOST_SHM_FD);
    if (m == MAP_FAILED) return -1;
    shm = m;
    if (shm->magic != BP_RING_MAGIC || shm->cap != BP_RING_CAP) return -1;
    bp_ring_init(&req_ring, &shm->req, (uint8_t *)m + BP_SHM_DATA, BP_RING_CAP);
    bp_ring_init(&res_ring, &shm->res, (uint8_t *)m + BP_SHM_DATA + BP_RING_CAP, BP_RING_CAP);
    return 0;
}

/* A frame for Bun: into the result ring when it fits now, else over the socket behind a MARK
   in the ring. Bun is rung only when its relay thread sleeps and JS does not poll. */
static void host_send(bp_frame *f, const void *payload, uint32_t len) {
    f->len = len;
    for (;;) {
        int64_t room = bp_ring_room(&res_ring);
        if (room < 0) _exit(70); /* code in this process wrote over the rings */
        if ((uint64_t)room >= sizeof *f + len) {
            bp_ring_put(&res_ring, f, payload);
            atomic_thread_fence(memory_order_seq_cst); /* pairs with Bun's announcements */
            if (atomic_load_explicit(&shm->bun_asleep, memory_order_relaxed) &&
                !atomic_load_explicit(&shm->js_polling, memory_order_relaxed))
                ring_bell(BP_BUN_BELL_FD);
            return;
        }
        if ((uint64_t)room >= sizeof *f) {
            bp_frame mark = {.kind = BP_FRAME_MARK};
            bp_ring_put(&res_ring, &mark, NULL);
            ring_bell(BP_BUN_BELL_FD);
            if (bp_chan_send(BP_HOST_FD, f, payload, len, -1) < 0) _exit(0); /* the relay is gone */
            return;
        }
        ring_bell(BP_BUN_BELL_FD); /* full: Bun reads it (nothing it does waits for us) */
        usleep(200);
    }
}

/* Everything the host's port has for the relay: completions and messages, then calls. */
static int host_flush(const bp_host_api *api, bp_io *io) {
    int closed = 0, n;
    while ((n = api->drain(io)) > 0) {
        const uint8_t *b = io->buf;
        uint32_t pos = 4;
        for (int i = 0; i < n; i++) {
            uint32_t id, len;
            int32_t status;
            memcpy(&id, b + pos, 4);
            memcpy(&status, b + pos + 4, 4);
            memcpy(&len, b + pos + 8, 4);
            const uint8_t *data = b + pos + 12;
            pos += 12 + len;
            bp_frame f = {0};
            if (id == 0) {
                f.kind = BP_FRAME_MESSAGE;
            } else if (id == START_ID) {
                f.kind = BP_FRAME_STARTED;
                f.arg = status;
            } else if (id == CLOSE_ID) {
                closed = 1;
                continue;
            } else if (id < nslots && slots[id].run) {
                f.kind = BP_FRAME_DONE;
                f.arg = status;
                f.slot = slots[id].slot;
                f.id = slots[id].run;
                slot_free(id);
            } else {
                continue;
            }
            host_send(&f, data, f.kind == BP_FRAME_STARTED && status == BP_OK ? 0 : len);
        }
    }
    while ((n = api->take_calls(io)) > 0) {
        const uint8_t *b = io->buf;
        uint32_t pos = 4;
        /* frames first: answering a call reuses the buffer */
        for (int i = 0; i < n; i++) {
            uint64_t call;
            uint32_t len;
            memcpy(&call, b + pos, 8);
            memcpy(&len, b + pos + 16, 4);
            bp_frame f = {.kind = BP_FRAME_CALL, .id = call};
            host_send(&f, b + pos + 20, len);
            pos += 20 + len;
        }
    }
    return closed;
}

static uint32_t slot_new(uint32_t slot, uint64_t run);
static void send_error(uint32_t kind, int32_t status, uint32_t slot, uint64_t id, const char *msg);

/* A SUBMIT frame whose payload is in host_io->buf: onto the context's queue. host_lock held. */
static void host_submit(const bp_frame *f) {
    if (f->arg == BP_REQ_REF_DROP) { /* no completion */
        host_api->submit(host_ctx, host_io, 0, f->arg, f->len);
        return;
    }
    uint32_t id = slot_new(f->slot, f->id);
    bp_request *r = host_api->submit(host_ctx, host_io, id, f->arg, f->len);
    if (r) {
        slots[id].req = r;
    } else {
        slot_free(id);
        send_error(BP_FRAME_DONE, BP_ERR_STATE, f->slot, f->id, "the context is closed");
    }
}

/* The request ring's frames onto the context's queue, up to a MARK (its frame comes over
   the socket: the main thread submits it). host_lock held. */
static int host_take_ring(void) {
    int n = 0;
    bp_frame f;
    int rc;
    while ((rc = bp_ring_peek(&req_ring, &f)) == 1 && f.kind != BP_FRAME_MARK) {
        if (f.kind != BP_FRAME_SUBMIT || host_api->io_reserve(host_io, f.len ? f.len : 1) != BP_OK) _exit(70);
        bp_ring_read(&req_ring, req_ring.mine + sizeof f, host_io->buf, f.len);
        bp_ring_pop(&req_ring, &f);
        host_submit(&f);
        n++;
    }
    if (rc < 0) _exit(70);
    return n;
}

/* The context thread's feed (bp_ctx_set_feed): it takes requests from the ring itself
   wherever it looks for work; about to sleep, it says so first. Bun then rings fd 5, which
   the sleeping context thread polls (wait.c), and so does the main thread (for a context
   thread asleep in its event loop's epoll, which does not): whichever wakes takes them. */
static int32_t host_feed(void *arg, int32_t sleeping) {
    (void)arg;
    if (atomic_load_explicit(&shm->host_sleeping, memory_order_relaxed) != (unsigned)sleeping) {
        atomic_store(&shm->host_sleeping, (unsigned)sleeping);
        atomic_thread_fence(memory_order_seq_cst);
    }
    if (!bp_ring_nonempty(&shm->req)) return 0;
    pthread_mutex_lock(&host_lock);
    int n = host_take_ring();
    pthread_mutex_unlock(&host_lock);
    return n;
}

/* A frame whose payload is an error record: STR message. */
static void send_error(uint32_t kind, int32_t status, uint32_t slot, uint64_t id, const char *msg) {
    uint8_t rec[600];
    uint32_t n = (uint32_t)strlen(msg);
    if (n > sizeof rec - 5) n = sizeof rec - 5;
    rec[0] = BP_T_STR;
    memcpy(rec + 1, &n, 4);
    memcpy(rec + 5, msg, n);
    bp_frame f = {.kind = kind, .arg = status, .slot = slot, .id = id};
    host_send(&f, rec, 5 + n);
}

/*
 * The main thread's own wall. The context thread gets the policy's kernel rules (the shim
 * applies them there); the main thread, which only relays, gets a fixed seccomp filter
 * once the context thread exists (so that thread does not inherit it): no new files, no
 * sockets, no processes, none of the calls a context never gets. Code in the context that
 * reached the main thread's memory (ctypes can) finds it no less confined than its own.
 * Threads the main thread starts later (the shim's interrupters and close watchdog) inherit
 * it; they only take locks, sleep and write to eventfds.
 */
#if defined(__x86_64__)
#define HOST_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define HOST_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

static int bp_host_lock_main(void) {
#ifdef HOST_AUDIT_ARCH
    static const long refused[] = {
#ifdef SYS_open
        SYS_open, SYS_creat, SYS_fork, SYS_vfork,
#endif
        SYS_openat, SYS_openat2, SYS_execve, SYS_execveat, SYS_socket, SYS_socketpair, SYS_connect, SYS_bind,
        SYS_ptrace, SYS_process_vm_writev, SYS_process_vm_readv, SYS_io_uring_setup, SYS_userfaultfd, SYS_bpf,
        SYS_personality, SYS_unshare, SYS_setns, SYS_mount, SYS_memfd_create, SYS_kill, SYS_seccomp,
    };
    enum { N = sizeof refused / sizeof *refused };
    struct sock_filter f[12 + 2 * N];
    int k = 0;
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, HOST_AUDIT_ARCH, 1, 0);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    for (int i = 0; i < N; i++) {
        f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)refused[i], 0, 1);
        f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    }
    /* clone3's flags are in memory the filter cannot read: ENOSYS makes glibc use clone */
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
    /* clone: threads only */
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 3);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
    f[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 1, 0);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    f[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {.len = (unsigned short)k, .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0 ? 0 : -1;
#else
    return -1;
#endif
}

static void *need_sym(void *lib, const char *name) {
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "bunpy-host: the shim lacks %s\n", name);
        _exit(70);
    }
    return p;
}

static int host_serve(const char *libpython, const char *shim, const char *program, const char *python_dir) {
    /* fact 1: libpython global first, then the shim resolves against it */
    if (!dlopen(libpython, RTLD_NOW | RTLD_GLOBAL)) {
        fprintf(stderr, "bunpy-host: cannot load %s: %s\n", libpython, dlerror());
        return 70;
    }
    void *lib = dlopen(shim, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "bunpy-host: cannot load %s: %s\n", shim, dlerror());
        return 70;
    }
    bp_host_api api = {
        .init = need_sym(lib, "bp_init"),
        .io_new = need_sym(lib, "bp_io_new"),
        .set_doorbell = need_sym(lib, "bp_port_set_doorbell"),
        .poll = need_sym(lib, "bp_port_poll"),
        .drain = need_sym(lib, "bp_port_drain"),
        .ctx_new = need_sym(lib, "bp_ctx_new"),
        .submit = need_sym(lib, "bp_ctx_submit"),
        .take_calls = need_sym(lib, "bp_port_take_calls"),
        .call_reply = need_sym(lib, "bp_call_reply"),
        .cancel = need_sym(lib, "bp_ctx_cancel"),
        .close = need_sym(lib, "bp_ctx_close"),
        .io_reserve = need_sym(lib, "bp_io_reserve"),
        .set_feed = need_sym(lib, "bp_ctx_set_feed"),
    };
    if (host_map() < 0) {
        fprintf(stderr, "bunpy-host: the shared memory is missing or wrong\n");
        return 70;
    }
    bell_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    char err[1024] = "";
    if (bell_fd < 0 || api.init(program, python_dir, err, sizeof err) != 0) {
        /* reported as the start's failure: the relay is waiting for STARTED */
        char msg[560];
        snprintf(msg, sizeof msg, "starting Python in the host failed: %s", err);
        send_error(BP_FRAME_STARTED, BP_ERR_STATE, 0, 0, msg);
        return 0;
    }
    bp_io *io = api.io_new(host_dispatch);
    if (!io) return 70;
    host_api = &api;
    host_io = io;
    api.set_doorbell(io, host_doorbell);
    bp_context *ctx = NULL;
    int closing = 0;
    bp_chan_in in = {0};
    struct pollfd pfd[3] = {{.fd = BP_HOST_FD, .events = POLLIN},
                            {.fd = bell_fd, .events = POLLIN},
                            {.fd = BP_HOST_BELL_FD, .events = POLLIN}};
    for (;;) {
        int got = bp_chan_fill(&in, BP_HOST_FD);
        if (got < 0) _exit(0); /* the relay is gone: nothing to serve any more */
        bp_frame f;
        const uint8_t *payload;
        int bad = 0, did = got > 0;
        pthread_mutex_lock(&host_lock);
        while ((payload = bp_chan_next(&in, &f, &bad))) {
            did = 1;
            if (ctx) host_take_ring(); /* what the ring has from before this frame comes first */
            if (api.io_reserve(io, f.len ? f.len : 1) != BP_OK) _exit(70);
            if (f.len) memcpy(io->buf, payload, f.len);
            switch (f.kind) {
            case BP_FRAME_START:
                if (!ctx) {
                    ctx = host_ctx = api.ctx_new(io, BP_CTX_WORKER, START_ID, f.len);
                    if (ctx) api.set_feed(ctx, host_feed, NULL, BP_HOST_BELL_FD);
                    /* the context thread exists (and does not inherit this): wall the main
                       thread in. Refused only where seccomp is missing. */
                    if (ctx && bp_host_lock_main() < 0 && errno != EINVAL && errno != ENOSYS)
                        fprintf(stderr, "bunpy-host: the main thread's seccomp filter failed: %s\n", strerror(errno));
                }
                if (!ctx) {
                    send_error(BP_FRAME_STARTED, BP_ERR_STATE, 0, 0, "the host could not create its context");
                    pthread_mutex_unlock(&host_lock);
                    return 0;
                }
                break;
            case BP_FRAME_SUBMIT: { /* too big for the ring: it takes the place of the MARK there */
                bp_frame mark;
                if (!ctx || bp_ring_peek(&req_ring, &mark) != 1 || mark.kind != BP_FRAME_MARK) _exit(70);
                bp_ring_pop(&req_ring, &mark);
                host_submit(&f);
                break;
            }
            case BP_FRAME_CANCEL:
                /* a request still in the table has not been drained: its pointer is live */
                for (uint32_t i = 2; ctx && i < nslots; i++)
                    if (slots[i].run == f.id && slots[i].slot == f.slot && slots[i].req) {
                        api.cancel(ctx, slots[i].req);
                        break;
                    }
                break;
            case BP_FRAME_ANSWER:
                /* the relay echoes a handle this host gave it in a CALL frame */
                api.call_reply((void *)(uintptr_t)f.id, io, f.arg, f.len);
                break;
            case BP_FRAME_CLOSE:
                if (!ctx) _exit(0);
                if (!closing) {
                    closing = 1;
                    if (api.close(ctx, io, CLOSE_ID, (uint32_t)f.arg) != BP_OK) _exit(0);
                }
                break;
            default:
                break;
            }
        }
        /* requests Bun rang for (the context thread slept), and what the doorbell's edge
           may have missed (calls answered meanwhile, the start) */
        if (ctx) did |= host_take_ring() > 0;
        int closed = ctx && host_flush(&api, io);
        pthread_mutex_unlock(&host_lock);
        if (bad) _exit(0);
        if (closed || atomic_load(&host_closed)) goto done;
        if (did) continue;
        /* no spinning: the context thread reads the rings itself; this thread is woken for
           socket frames, the close, and requests that came while the context thread slept */
        if (poll(pfd, 3, -1) > 0) {
            /* the eventfd in one read; the bell is a pipe Bun writes 8 bytes per ring to
               (non-blocking): what a burst of rings left, in one read too */
            uint8_t drop[4096];
            ssize_t n = 0;
            if (pfd[1].revents & POLLIN) n = read(bell_fd, drop, 8);
            if (pfd[2].revents & POLLIN) n = read(BP_HOST_BELL_FD, drop, sizeof drop);
            (void)n;
        }
    }
done:
    pthread_mutex_lock(&host_lock); /* no doorbell sends half a frame while we exit */
    /* the context has ended: no Python teardown of the process (the relay reaps it) */
    fflush(stdout);
    fflush(stderr);
    /* The relay sees the end of the channel, stops this process, ends what Python started
       (this thread may neither open /proc nor kill: see bp_host_lock_main) and kills it:
       exiting before that would leave those processes to init, out of reach. (If Bun is
       gone, the socket's end or the parent-death signal ends the wait.) */
    shutdown(BP_HOST_FD, SHUT_WR);
    struct pollfd end = {.fd = BP_HOST_FD, .events = POLLIN};
    char drop[256];
    for (;;) {
        if (poll(&end, 1, -1) < 0 && errno != EINTR) break;
        ssize_t n = recv(BP_HOST_FD, drop, sizeof drop, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
    }
    _exit(0);
}

int main(int argc, char **argv) {
    bp_host_limits lim = {.network = 0, .private_tmp = 1};
    int check = 0;
    long parent = 0;
    const char *libpython = NULL, *shim = NULL, *program = NULL, *python_dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--check")) check = 1;
        else if (!strcmp(a, "--memory")) lim.memory = number_arg(argv[++i]);
        else if (!strcmp(a, "--cpu")) lim.cpu = number_arg(argv[++i]);
        else if (!strcmp(a, "--files")) lim.files = number_arg(argv[++i]);
        else if (!strcmp(a, "--network")) lim.network = 1;
        else if (!strcmp(a, "--shared-tmp")) lim.private_tmp = 0;
        else if (!strcmp(a, "--parent")) parent = (long)number_arg(argv[++i]);
        else if (!strcmp(a, "--libpython") && i + 1 < argc) libpython = argv[++i];
        else if (!strcmp(a, "--shim") && i + 1 < argc) shim = argv[++i];
        else if (!strcmp(a, "--program") && i + 1 < argc) program = argv[++i];
        else if (!strcmp(a, "--python-dir") && i + 1 < argc) python_dir = argv[++i];
        else {
            fprintf(stderr, "bunpy-host: unknown option %s\n", a);
            return 64;
        }
    }
    /* dies with the thread that started it; a parent already gone is caught here */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (parent && getppid() != parent) return 1;
    /* what Python starts stays below this process however it is orphaned, so the relay
       can end it (shim/descendants.h) */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    close_inherited(check ? 2 : BP_BUN_BELL_FD); /* the socket, the memfd, the two bells */
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    /* glibc reserves 64 MiB of address space per malloc arena (one per thread that
       allocates): under RLIMIT_AS they would eat the limit, so at most two */
    if (lim.memory) mallopt(M_ARENA_MAX, 2);
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
    if (!libpython || !shim || !program || !python_dir) {
        fprintf(stderr, "bunpy-host: --libpython, --shim, --program and --python-dir are needed to serve\n");
        return 64;
    }
    return host_serve(libpython, shim, program, python_dir);
}
