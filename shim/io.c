/*
 * io.c — ports: one per JS thread that talks to the main interpreter.
 *
 * A port owns the data buffer shared with JS and the thread state the JS thread uses to
 * take the main GIL for the duration of one call. The JS thread that initialised Python
 * reuses the initial thread state; any other JS thread (a Bun Worker) gets one through
 * PyGILState_Ensure so that extensions calling PyGILState_* on that thread find it.
 */
#include "internal.h"
#include "context.h"
#include <dlfcn.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define BP_IO_INITIAL_CAP (64 * 1024)
#define BP_IO_TRIM_ABOVE (4 * 1024 * 1024)

extern PyThreadState *bp_main_ts;      /* runtime.c: thread state of the initialising thread */
extern pthread_t bp_main_thread;
extern int bp_main_ts_taken;

static pthread_key_t thread_port_key;
static pthread_once_t thread_port_once = PTHREAD_ONCE_INIT;

/*
 * The end of a JS thread. A port's doorbell is a threadsafe JSCallback: its code is
 * compiled by Bun (TinyCC) for the JS thread's VM and freed with that VM. Bun ends a
 * Worker (web_worker.zig exitAndDeinit, on the Worker's thread) in this order: vm.onExit()
 * — which runs the VM's cleanup hooks (rare_data.cleanup_hooks, where
 * napi_add_env_cleanup_hook puts them) — then WebWorker__dispatchExit, which lets the
 * global object and its heap go, vm.deinit(), the Worker's arena, and only then the OS
 * thread's exit. A doorbell rung after the cleanup hooks jumps into freed code (the
 * SIGSEGV of test/fixtures/hostile-worker-terminated.ts asgi). So a Worker's port is
 * closed from a cleanup hook (bp_port_watch_env), and the thread-specific destructor below
 * stays as the fallback for a Bun without N-API.
 *
 * Closing is race-free against a ring under way (and a message being queued): a ringer
 * counts itself in `ringing` and then looks at `closed`; the closer sets `closed` and then
 * waits until `ringing` is 0. Both sides use sequentially consistent atomics, so either the ringer sees `closed`
 * (and rings nothing) or the closer sees the ringer (and waits for its ring, which posts a
 * task and returns, to end while the VM is still whole). Cost per ring: two uncontended
 * atomic adds, no syscall; the wait is bounded by one ring: nothing inside the guard
 * (bp_port_ring, or bp_port_enter to bp_port_leave) waits for a lock or the GIL.
 */
static void shut(bp_port *p) {
    atomic_store(&p->closed, 1);
    while (atomic_load(&p->ringing) != 0) sched_yield();
}

void bp_port_ring(bp_port *p) {
    atomic_fetch_add(&p->ringing, 1);
    if (!atomic_load(&p->closed) && p->doorbell) p->doorbell(&p->io);
    atomic_fetch_sub(&p->ringing, 1);
}

/* The same guard around the push of a bunpy.send message or a bunpy.call (jscall.c): the
   ending JS thread then finds every one in its queue when it frees or answers them. Not
   results: they hold no context, and guarding each would put two atomic adds on every
   ctx.call. Between enter and leave only the push and a sem_post: the ring comes after. */
int bp_port_enter(bp_port *p) {
    atomic_fetch_add(&p->ringing, 1);
    if (!atomic_load(&p->closed)) return 1;
    atomic_fetch_sub(&p->ringing, 1);
    return 0;
}

void bp_port_leave(bp_port *p) { atomic_fetch_sub(&p->ringing, 1); }

/* Both ends run on the port's own JS thread, so `freed` and the contexts list need no lock. */
static void js_thread_ending(bp_port *p) {
    shut(p);
    if (p->freed) return;
    bp_port_refuse_calls(p); /* each call holds its context: answered, it lets it go */
    if (bp_running()) bp_port_close_contexts(p);
    bp_port_drop_completions(p);
}

static void thread_ended(void *port) { js_thread_ending(port); }
static void make_thread_port_key(void) { pthread_key_create(&thread_port_key, thread_ended); }

/* When this JS thread's OS thread exits, its port is marked closed (see bp_port_alive). */
static void watch_thread_end(bp_port *p) {
    pthread_once(&thread_port_once, make_thread_port_key);
    pthread_setspecific(thread_port_key, p);
}

/* The cleanup hook of a Worker's VM: runs on its thread, before Bun frees the doorbell. */
static void env_cleanup(void *port) {
    bp_port *p = port;
    pthread_setspecific(thread_port_key, NULL); /* done here: the destructor has nothing left */
    js_thread_ending(p);
    bp_port_unref(p); /* the hook's reference */
}

typedef int (*napi_cleanup_adder)(void *env, void (*fn)(void *), void *arg);

/* Called by JS on a Bun Worker's thread with that thread's napi_env (bun:ffi passes it for an
   argument typed napi_env): closes the port from the VM's cleanup hooks. N-API is looked up
   in the process (Bun exports it) rather than linked, so a process without it (a process
   context's host) still loads the shim. The hook holds a reference to the port until it
   runs: the port outlives bp_io_free for that long (a Worker's lifetime), harmless. */
int32_t bp_port_watch_env(bp_io *io, void *env) {
    if (!io || !env) return BP_ERR_STATE;
    bp_port *p = bp_port_of(io);
    if (!pthread_equal(p->owner, pthread_self())) return BP_ERR_STATE;
    napi_cleanup_adder add = (napi_cleanup_adder)dlsym(RTLD_DEFAULT, "napi_add_env_cleanup_hook");
    if (!add) return BP_ERR_STATE;
    atomic_fetch_add(&p->refs, 1);
    if (add(env, env_cleanup, p) != 0) { /* napi_ok is 0 */
        bp_port_unref(p);
        return BP_ERR_STATE;
    }
    return BP_OK;
}

bp_io *bp_io_new(bp_dispatch_fn dispatch) {
    if (!bp_running()) return NULL;
    bp_port *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->io.buf = malloc(BP_IO_INITIAL_CAP);
    if (!p->io.buf) { free(p); return NULL; }
    p->io.cap = BP_IO_INITIAL_CAP;
    p->io.drop_cap = 1024;
    p->io.drop = calloc(p->io.drop_cap, sizeof(double));
    if (!p->io.drop) { free(p->io.buf); free(p); return NULL; }
    p->owner = pthread_self();
    watch_thread_end(p);
    p->dispatch = dispatch;
    atomic_init(&p->refs, 1);
    atomic_init(&p->closed, 0);
    atomic_init(&p->ringing, 0);
    pthread_mutex_init(&p->released_lock, NULL);
    sem_init(&p->sync_wake, 0, 0);
    if (pthread_equal(p->owner, bp_main_thread) && !bp_main_ts_taken) {
        p->ts = bp_main_ts;
        bp_main_ts_taken = 1;
        atomic_store(&bp_main_port, p); /* Ctrl-C reads its depth (runtime.c) */
    } else {
        /* Registers a thread state for this thread in the GILState table, then lets the
           GIL go: the port takes it per call with PyEval_RestoreThread(p->ts). */
        PyGILState_Ensure();
        p->ts = PyThreadState_Get();
        p->from_gilstate = 1;
        PyEval_SaveThread();
    }
    return &p->io;
}

void bp_port_unref(bp_port *p) {
    if (atomic_fetch_sub(&p->refs, 1) != 1) return;
    pthread_mutex_destroy(&p->released_lock);
    sem_destroy(&p->sync_wake);
    free(p->released.ids);
    free(p->own_released.ids);
    free(p->io.buf);
    free(p->io.drop);
    free(p);
}

void bp_io_free(bp_io *io) {
    if (!io) return;
    bp_port *p = bp_port_of(io);
    shut(p);
    if (pthread_equal(p->owner, pthread_self())) {
        p->freed = 1; /* a cleanup hook still to run leaves the contexts alone */
        pthread_setspecific(thread_port_key, NULL);
    }
    if (p->from_gilstate && bp_running() && pthread_equal(p->owner, pthread_self())) {
        PyEval_RestoreThread(p->ts);
        PyGILState_Release(PyGILState_UNLOCKED); /* what Ensure returned in bp_io_new */
    } else if (p->ts == bp_main_ts) {
        bp_main_ts_taken = 0;
        atomic_store(&bp_main_port, NULL);
    }
    p->ts = NULL;
    bp_port_unref(p);
}

/* Called by JS before it writes a value larger than the buffer, and by C. No GIL needed. */
int32_t bp_io_reserve(bp_io *io, uint32_t need) {
    if (need <= io->cap) return BP_OK;
    uint64_t cap = io->cap;
    while (cap < need) cap *= 2;
    if (cap > UINT32_MAX) cap = UINT32_MAX;
    uint8_t *buf = realloc(io->buf, (size_t)cap);
    if (!buf) return BP_ERR_MEMORY;
    io->buf = buf;
    io->cap = (uint32_t)cap;
    io->gen++;
    return BP_OK;
}

/* bp_io_reserve with a MemoryError set on failure (GIL held). */
int bp_io_grow(bp_io *io, uint32_t need) {
    if (bp_io_reserve(io, need) == BP_OK) return 0;
    PyErr_NoMemory();
    return -1;
}

/* After a huge value the buffer goes back to its usual size, keeping `keep` bytes (the
   result JS is about to read). JS sees the move through io->gen. */
void bp_io_trim(bp_io *io, uint32_t keep) {
    if (io->cap <= BP_IO_TRIM_ABOVE || keep > BP_IO_INITIAL_CAP) return;
    uint8_t *buf = realloc(io->buf, BP_IO_INITIAL_CAP);
    if (!buf) return; /* keeping the big one is fine */
    io->buf = buf;
    io->cap = BP_IO_INITIAL_CAP;
    io->gen++;
}

/* Appends to one of the port's id lists; 0, or -1 when it could not grow. */
static int push_id(bp_id_list *l, int32_t id) {
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 64;
        int32_t *ids = realloc(l->ids, cap * sizeof *ids);
        if (!ids) return -1;
        l->ids = ids;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
    return 0;
}

/* io.released counts both lists (JS reads it to know there is something to take): the JS
   thread and other threads add to it, so atomically. */

/* A JSFunction, pin or kept JS error died (any thread, GIL held): remember its id for JS
   to forget. On the port's own JS thread, inside one of its calls (a caught JS error dies
   there, once per throw), without the lock: only that thread touches `own_released`. */
void bp_port_release_id(bp_port *p, int32_t id) {
    if (bp_current_port == p) {
        if (push_id(&p->own_released, id) == 0) __atomic_fetch_add(&p->io.released, 1, __ATOMIC_RELAXED);
        return; /* JS keeps the fn if it could not grow: a leak, not a crash */
    }
    pthread_mutex_lock(&p->released_lock);
    if (push_id(&p->released, id) == 0) __atomic_fetch_add(&p->io.released, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&p->released_lock);
}

/* JS drains the released ids: a LIST of INT32 in the buffer (its own thread: own_released
   is not touched by anyone else meanwhile, and released is under the lock). */
int32_t bp_take_released(bp_io *io) {
    bp_port *p = bp_port_of(io);
    pthread_mutex_lock(&p->released_lock);
    uint32_t n1 = p->released.n, n2 = p->own_released.n, n = n1 + n2;
    uint64_t need = 5 + 5 * (uint64_t)n;
    if (bp_io_reserve(io, (uint32_t)need) != BP_OK) {
        pthread_mutex_unlock(&p->released_lock);
        return BP_ERR_MEMORY;
    }
    uint8_t *b = io->buf;
    b[0] = BP_T_LIST;
    memcpy(b + 1, &n, 4);
    for (uint32_t i = 0; i < n; i++) {
        b[5 + 5 * i] = BP_T_INT32;
        memcpy(b + 6 + 5 * i, i < n1 ? &p->released.ids[i] : &p->own_released.ids[i - n1], 4);
    }
    io->len = (uint32_t)need;
    p->released.n = 0;
    p->own_released.n = 0;
    __atomic_fetch_sub(&p->io.released, n, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&p->released_lock);
    return BP_OK;
}

/* Whether the JS thread of a port still exists (see "The end of a JS thread" above). A
   hint only for whether to queue something: the doorbell itself is rung by bp_port_ring,
   which looks again under its own guard. */
int bp_port_alive(bp_port *p) { return !atomic_load(&p->closed); }
