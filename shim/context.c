/*
 * context.c — contexts: one OS thread running one interpreter, serving requests.
 *
 *   owngil: a subinterpreter with its own GIL (Python >= 3.12): truly parallel.
 *   worker: a thread of the main interpreter (shared GIL): for single-phase extensions
 *           such as numpy, and the only mode on 3.11.
 *
 * Requests come in through a lock-free MPSC queue; the context thread runs them in
 * order and pushes each finished request onto the completion queue of the JS port that
 * sent it, ringing that port's doorbell (a threadsafe JSCallback) on the empty -> non-empty
 * edge. JS drains every completion with one bp_port_drain call.
 *
 * Thread-state rules (facts 4 and 5 in docs/architecture.md):
 *   - creation: take bp_create_lock BEFORE attaching a main thread state; the new
 *     interpreter briefly needs the main GIL; never block while holding the main GIL.
 *   - never PyGILState_* for subinterpreters; a foreign thread enters one with
 *     PyThreadState_New(interp) + PyEval_RestoreThread and deletes its state afterwards.
 *   - an interpreter ends on the thread that created it, with no other thread state left.
 *   - `current` (the request being run) only changes while the context holds its GIL, so
 *     an interrupter that holds the same GIL sees a stable value.
 */
#include "internal.h"
#include "context.h"
#include "kernel-rules.h"
#include <semaphore.h>
#include <stdlib.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

extern PyInterpreterState *bp_main_interp;
extern pthread_mutex_t bp_create_lock;
extern const char *bp_python_dir;

/* Contexts whose thread has not finished yet: Python cannot be finalised under them. */
atomic_int bp_live_contexts = 0;
/* owngil interpreters that exist (left behind ones too); raised with the main GIL held:
   tracemalloc cannot start meanwhile (runtime.c) */
atomic_int bp_owngil_interps = 0;

/* ---------------------------------------------------------------- references ----- */

void bp_ctx_ref(bp_context *c) { atomic_fetch_add(&c->refs, 1); }

static void close_wakefds(bp_context *c) {
    bp_wakefd_close(&c->wake);
    bp_wakefd_close(&c->alert);
    bp_wakefd_close(&c->answers);
    bp_wakefd_close(&c->sig);
}

void bp_ctx_unref(bp_context *c) {
    if (atomic_fetch_sub(&c->refs, 1) != 1) return;
    if (c->owner) bp_port_unref(c->owner);
    close_wakefds(c);
    if (c->bell) bp_bell_stop(c->bell);
    bp_ctx_drop_answers(c);
    if (c->relay) bp_relay_free(c->relay);
    pthread_mutex_destroy(&c->life_lock);
    pthread_cond_destroy(&c->life_cond);
    free(c->scratch.buf);
    free(c->scratch.drop);
    free(c);
}

/* ------------------------------------------------------------ interpreter life ----- */

/* Python code run in every new context before it serves requests. */
static int setup_interpreter(bp_context *c, int owngil) {
    PyObject *sys_path = PySys_GetObject("path");
    PyObject *dir = PyUnicode_DecodeFSDefault(bp_python_dir);
    int present = sys_path && dir ? PySequence_Contains(sys_path, dir) : -1;
    /* a worker context shares the main interpreter's sys.path, which has it already */
    int ok = present == 1 || (present == 0 && PyList_Insert(sys_path, 0, dir) == 0);
    Py_XDECREF(dir);
    if (!ok) return -1;
    PyObject *m = PyImport_ImportModule("_bunpy");
    if (!m) return -1;
    Py_DECREF(m);
    /* the start request carries the sandbox policy (a dict, or None) */
    bp_reader rd = {.buf = c->start->data, .pos = 0, .end = c->start->len, .port = NULL, .st = NULL};
    PyObject *spec = c->start->len ? bp_read_value(&rd, 0) : Py_NewRef(Py_None);
    if (!spec) return -1;
    PyObject *setup = PyImport_ImportModule("bunpy._context");
    PyObject *policy = setup ? PyObject_CallMethod(setup, "setup", "iO", owngil, spec) : NULL;
    Py_XDECREF(setup);
    Py_DECREF(spec);
    if (!policy) return -1;
    int loaded = bp_policy_load(&c->policy, policy);
    Py_DECREF(policy);
    if (loaded < 0) return -1;
    if (owngil && c->policy.memory_limit && bp_memcap_register(c->policy.memory_limit) < 0) return -1;
    if (owngil) {
        bp_interp *st = bp_interp_get();
        if (st) st->ctx = c; /* the sandbox finds the policy of this interpreter's other threads */
        c->main_module = Py_XNewRef(PyImport_AddModule("__main__"));
    } else {
        /* worker mode shares the main interpreter: give the context its own namespace */
        c->main_module = PyModule_New("__main__");
        if (c->main_module) {
            PyObject *d = PyModule_GetDict(c->main_module);
            if (PyDict_SetItemString(d, "__builtins__", PyEval_GetBuiltins()) < 0) Py_CLEAR(c->main_module);
        }
    }
    if (!c->main_module) return -1;
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *ident = threading ? PyObject_CallMethod(threading, "get_ident", NULL) : NULL;
    c->ident = ident ? PyLong_AsUnsignedLong(ident) : 0;
    c->policy.owngil = owngil; /* maxThreads counts the context's threads by these */
    c->policy.ident = c->ident;
    Py_XDECREF(ident);
    Py_XDECREF(threading);
    /* what JS interrupts raise here (bunpy is imported: bunpy._context was) */
    PyObject *pkg = PyErr_Occurred() ? NULL : PyImport_ImportModule("bunpy");
    c->interrupt_type = pkg ? PyObject_GetAttrString(pkg, "Interrupted") : NULL;
    Py_XDECREF(pkg);
    if (PyErr_Occurred()) return -1;
    /* last, once everything the context needs at start is loaded: the kernel's rules */
    return bp_kernel_rules_apply(&c->policy);
}

/* The startup error as text, for the start request. */
static void startup_failed(bp_context *c, const char *what) {
    char msg[512];
    PyObject *exc = PyErr_Occurred() ? bp_err_take() : NULL;
    PyObject *s = exc ? PyObject_Str(exc) : NULL;
    const char *text = s ? PyUnicode_AsUTF8(s) : NULL;
    snprintf(msg, sizeof msg, "%s%s%s", what, text ? ": " : "", text ? text : "");
    Py_XDECREF(s);
    Py_XDECREF(exc);
    PyErr_Clear();
    bp_request_fail(c->start, BP_ERR_STATE, msg);
    c->start = NULL;
}

/* On success the context thread holds its interpreter's GIL. */
static PyThreadState *start_owngil(bp_context *c, PyThreadState **main_ts) {
#if PY_VERSION_HEX >= 0x030C0000
    pthread_mutex_lock(&bp_create_lock); /* before any main thread state is attached */
    *main_ts = PyThreadState_New(bp_main_interp);
    PyEval_RestoreThread(*main_ts);
    if (bp_tracemalloc_tracing()) { /* it is not safe with another GIL (runtime.c) */
        PyThreadState_Clear(*main_ts);
        PyThreadState_DeleteCurrent();
        *main_ts = NULL;
        pthread_mutex_unlock(&bp_create_lock);
        bp_request_fail(c->start, BP_ERR_STATE,
                        "owngil contexts cannot start while tracemalloc traces memory (it is not safe with more than one "
                        "GIL): call tracemalloc.stop() first, or use mode \"worker\"");
        c->start = NULL;
        return NULL;
    }
    atomic_fetch_add(&bp_owngil_interps, 1); /* main GIL held: tracemalloc.start() sees it */
    PyInterpreterConfig cfg = {
        .use_main_obmalloc = 0,
        .allow_fork = 0,
        .allow_exec = 0,
        .allow_threads = 1,
        /* daemon threads allowed (libraries start them: asgiref joins its executor from
           one); the context's teardown joins them like the others (_context.py), since an
           interpreter cannot end while any of its threads runs */
        .allow_daemon_threads = 1,
        .check_multi_interp_extensions = 1,
        .gil = PyInterpreterConfig_OWN_GIL,
    };
    PyThreadState *sub = NULL;
    PyStatus st = Py_NewInterpreterFromConfig(&sub, &cfg);
    if (PyStatus_Exception(st)) {
        /* still on main_ts with the main GIL */
        char msg[300];
        snprintf(msg, sizeof msg, "creating the subinterpreter failed: %s", st.err_msg ? st.err_msg : "unknown");
        atomic_fetch_sub(&bp_owngil_interps, 1);
        PyThreadState_Clear(*main_ts);
        PyThreadState_DeleteCurrent();
        *main_ts = NULL;
        pthread_mutex_unlock(&bp_create_lock);
        bp_request_fail(c->start, BP_ERR_STATE, msg);
        c->start = NULL;
        return NULL;
    }
    pthread_mutex_unlock(&bp_create_lock);
    c->interp = PyThreadState_GetInterpreter(sub);
#if PY_VERSION_HEX < 0x030D0000
    { extern atomic_int bp_finalize_unsafe; atomic_store(&bp_finalize_unsafe, 1); } /* 3.12: see runtime.c */
#endif
    if (setup_interpreter(c, 1) < 0) {
        startup_failed(c, "setting up the subinterpreter failed");
        bp_policy_clear(&c->policy);
        Py_CLEAR(c->main_module);
        Py_CLEAR(c->interrupt_type);
        PyEval_SaveThread();
        PyInterpreterState *interp = sub->interp;
        pthread_mutex_lock(&bp_create_lock); /* ending interpreters concurrently races (fact 3) */
        PyEval_RestoreThread(sub);
        Py_EndInterpreter(sub);
        bp_memcap_forget(interp); /* a memoryLimit registered before setup failed */
        atomic_fetch_sub(&bp_owngil_interps, 1);
        pthread_mutex_unlock(&bp_create_lock);
        PyEval_RestoreThread(*main_ts);
        PyThreadState_Clear(*main_ts);
        PyThreadState_DeleteCurrent();
        *main_ts = NULL;
        return NULL;
    }
    return sub;
#else
    (void)main_ts;
    bp_request_fail(c->start, BP_ERR_STATE,
                     "owngil contexts need Python 3.12 or newer (subinterpreters with their own GIL); use mode \"worker\"");
    c->start = NULL;
    return NULL;
#endif
}

static PyThreadState *start_worker(bp_context *c) {
    PyThreadState *ts = PyThreadState_New(bp_main_interp);
    PyEval_RestoreThread(ts);
    c->interp = bp_main_interp;
    if (setup_interpreter(c, 0) < 0) {
        startup_failed(c, "setting up the worker context failed");
        bp_policy_clear(&c->policy);
        Py_CLEAR(c->main_module);
        Py_CLEAR(c->interrupt_type);
        PyThreadState_Clear(ts);
        PyThreadState_DeleteCurrent();
        return NULL;
    }
    return ts;
}

/* Waits (GIL released) until no interrupter can still enter the interpreter, then drops
   an interrupt that was set but has not fired. */
static void stop_interrupters(bp_context *c) {
    PyThreadState *ts = PyEval_SaveThread();
    pthread_mutex_lock(&c->life_lock);
    atomic_store(&c->state, CTX_ENDING);
    pthread_cond_broadcast(&c->life_cond); /* the close watchdog stops watching */
    while (c->interrupters > 0) pthread_cond_wait(&c->life_cond, &c->life_lock);
    pthread_mutex_unlock(&c->life_lock);
    PyEval_RestoreThread(ts);
    if (atomic_exchange(&c->interrupts, 0)) PyThreadState_SetAsyncExc(c->ident, NULL);
    if (PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) PyErr_Clear();
}

/* What interpreter shutdown does, done by bunpy._context.teardown on the context thread
   while the close watchdog can still interrupt it: join the context's threads, shut its
   executors down, run its atexit handlers (owngil), release its objects. */
static void run_teardown(bp_context *c) {
    PyObject *m = PyImport_ImportModule("bunpy._context");
    PyObject *r = m ? PyObject_CallMethod(m, "teardown", "iO", c->mode == BP_CTX_OWNGIL, c->main_module) : NULL;
    if (!r && PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) PyErr_Clear(); /* the watchdog cut it short */
    if (!r && PyErr_Occurred()) PyErr_WriteUnraisable(m);
    Py_XDECREF(r);
    Py_XDECREF(m);
}

static int alone_in_interpreter(PyThreadState *ts) {
    return PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(ts)) == ts && !PyThreadState_Next(ts);
}

static void end_interpreter(bp_context *c, PyThreadState *ts, PyThreadState *main_ts) {
    stop_interrupters(c);
    Py_CLEAR(c->main_module);
    Py_CLEAR(c->interrupt_type);
    if (c->mode == BP_CTX_WORKER) {
        bp_policy_clear(&c->policy);
        PyThreadState_Clear(ts);
        PyThreadState_DeleteCurrent();
        return;
    }
#if PY_VERSION_HEX >= 0x030C0000
    /* Py_EndInterpreter aborts the process if another thread state is left (threads from
       _thread.start_new_thread, or still ending): give them a few seconds, else leave the
       interpreter behind rather than crash. */
    /* by the clock: with a thread spinning, each turn also waits for the GIL */
    for (int64_t until = bp_now_ns() + 5000000000LL; !alone_in_interpreter(ts) && bp_now_ns() < until;) {
        Py_BEGIN_ALLOW_THREADS usleep(10000);
        Py_END_ALLOW_THREADS
    }
    if (!alone_in_interpreter(ts)) {
        extern atomic_int bp_finalize_unsafe;
        fprintf(stderr, "bunpy: a context was closed while Python threads it started were still running; "
                        "its interpreter is left behind until the process exits\n");
        bp_interp *st = bp_interp_get();
        if (st) {
            /* its threads must not read this context (it will be freed) but keep its sandbox
               policy: moved to a copy that lives as long as the process */
            bp_policy *left = malloc(sizeof *left);
            if (left) {
                *left = c->policy;
                memset(&c->policy, 0, sizeof c->policy);
            }
            st->left_policy = left;
            st->ctx = NULL;
        }
        bp_policy_clear(&c->policy); /* empty once moved (were malloc to fail, only the kernel rules would hold for those threads) */
        atomic_store(&bp_finalize_unsafe, 1);
        PyEval_SaveThread();
        PyEval_RestoreThread(main_ts);
        PyThreadState_Clear(main_ts);
        PyThreadState_DeleteCurrent();
        return;
    }
    /* the policy holds until no thread of the interpreter can run Python any more */
    bp_policy_clear(&c->policy);
    /* Stopping interpreters concurrently races in some releases (fact 3 in docs/architecture.md). */
    PyThreadState *sub = PyEval_SaveThread();
    PyInterpreterState *interp = sub->interp;
    pthread_mutex_lock(&bp_create_lock);
    PyEval_RestoreThread(sub);
    Py_EndInterpreter(sub);
    bp_memcap_forget(interp); /* under the lock: no interpreter can be made at its address yet */
    atomic_fetch_sub(&bp_owngil_interps, 1); /* (one left behind above keeps counting) */
    pthread_mutex_unlock(&bp_create_lock);
    PyEval_RestoreThread(main_ts);
    PyThreadState_Clear(main_ts);
    PyThreadState_DeleteCurrent();
#else
    (void)main_ts;
#endif
}

/* The context's thread no longer counts as live (once, whoever gets here first). */
static void release_live(bp_context *c) {
    if (!atomic_exchange(&c->live_released, 1)) atomic_fetch_sub(&bp_live_contexts, 1);
}

/* Completes the close request once: by the context thread when it ends (NONE), or by the
   watchdog when it abandons the thread (TRUE). */
static void finish_close(bp_context *c, int abandoned) {
    if (!c->close_req || atomic_exchange(&c->close_claimed, 1)) return;
    bp_request_complete(c->close_req, BP_OK, (const uint8_t[]){abandoned ? BP_T_TRUE : BP_T_NONE}, 1);
}

/* Called by the context thread once its state is past CTX_CLOSING, before it completes the
   close: waits for close's watchdog to stop and drops the reference it left, so the last
   reference (and with it the context's fds) goes when JS frees the context, not whenever
   the watchdog thread next runs — close() resolves with the fds already closed. */
static void wait_for_watchdog(bp_context *c) {
    pthread_mutex_lock(&c->life_lock);
    pthread_cond_broadcast(&c->life_cond);
    while (c->watchdog == 1) pthread_cond_wait(&c->life_cond, &c->life_lock);
    int left_ref = c->watchdog == 2;
    c->watchdog = 0;
    pthread_mutex_unlock(&c->life_lock);
    if (left_ref) bp_ctx_unref(c); /* never the last: this thread holds one */
}

static void reject_all(bp_context *c, bp_node *list, const char *why) {
    while (list) {
        bp_request *req = (bp_request *)list;
        list = list->next;
        if (req->op == BP_REQ_REF_DROP) bp_request_free(req);
        else if (req->op == BP_REQ_CLOSE) finish_close(c, 0); /* it is over */
        else bp_request_fail(req, BP_ERR_STATE, why);
    }
}

/* Final state: no producer can push any more; whatever got in is rejected. Producers
   announce themselves in `submitting` before they check the state (lock-free push). */
static void seal(bp_context *c, int state, const char *why) {
    atomic_store(&c->state, state);
    while (atomic_load(&c->submitting) > 0) sched_yield();
    reject_all(c, bp_mpsc_take(&c->requests), why);
}

_Thread_local bp_context *bp_this_context;

/* Serves requests until a close request arrives; returns it. */
static bp_request *serve_until_closed(bp_context *c) {
    for (;;) {
        if (c->deferred_close) { /* taken while a JS callback was awaited */
            bp_request *close_req = c->deferred_close;
            c->deferred_close = NULL;
            return close_req;
        }
        bp_request *req = bp_ctx_next_request(c);
        if (req) {
            if (req->op == BP_REQ_CLOSE) return req;
            bp_ctx_serve(c, req);
        } else if (atomic_load(&c->task_cancels) != c->task_cancels_seen) {
            bp_loop_cancel_tasks(c);
        } else if (c->loop_reactor) {
            bp_loop_step(c); /* its wait ends when a request arrives */
        } else if (c->loop) {
            bp_loop_lost(c); /* its reactor was closed under it: its tasks can never run */
        } else {
            bp_ctx_wait_for_work(c);
        }
    }
}

/*
 * Runs only when the context thread is ended under us — pthread_exit() called from Python
 * code (a C extension, or ctypes) while it ran a request. The thread held its GIL: give it
 * up so the rest of the process goes on, fail what this context was doing, and mark it
 * dead. Its interpreter is abandoned (it cannot be ended from another thread), and
 * Py_FinalizeEx is skipped from then on.
 */
static void on_thread_killed(void *arg) {
    extern atomic_int bp_finalize_unsafe;
    bp_context *c = arg;
    atomic_store(&c->state, CTX_DEAD); /* before JS can see any failure below */
    atomic_store(&bp_finalize_unsafe, 1);
    if (bp_thread_state_unchecked()) PyEval_SaveThread();
    for (bp_request *r = c->current; r;) {
        bp_request *outer = r->outer;
        bp_request_fail(r, BP_ERR_DIED, "the context's thread ended while running this call");
        r = outer;
    }
    c->current = NULL;
    bp_loop_abandon(c);
    reject_all(c, c->batch, "the context's thread ended unexpectedly");
    c->batch = NULL;
    seal(c, CTX_DEAD, "the context's thread ended unexpectedly");
    release_live(c);
    wait_for_watchdog(c);
    if (c->deferred_close || c->close_req) finish_close(c, 0); /* it is over */
    bp_ctx_unref(c);
}

static void *context_main(void *arg) {
    bp_context *c = arg;
    bp_this_context = c;
    PyThreadState *main_ts = NULL;
    PyThreadState *ts = NULL;
    if (c->own_fds && bp_fds_isolate(c) < 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "bunpy sandbox: the context could not get a file descriptor table of its own: %s",
                 strerror(errno));
        bp_request_fail(c->start, BP_ERR_STATE, msg);
        c->start = NULL;
    } else {
        ts = c->mode == BP_CTX_OWNGIL ? start_owngil(c, &main_ts) : start_worker(c);
    }
    if (!ts) {
        seal(c, CTX_DEAD, "the context failed to start");
        release_live(c);
        wait_for_watchdog(c);
        bp_ctx_unref(c);
        return NULL;
    }
    atomic_store(&c->state, CTX_RUNNING);
    bp_request_complete(c->start, BP_OK, (const uint8_t[]){BP_T_NONE}, 1);
    c->start = NULL;

    pthread_cleanup_push(on_thread_killed, c);
    serve_until_closed(c); /* returns the close request: c->close_req */
    /* teardown, in the order interpreter shutdown uses; the close watchdog may interrupt
       any of it once the grace period is over */
    bp_loop_close(c);
    run_teardown(c);
    pthread_cleanup_pop(0);
    end_interpreter(c, ts, main_ts);
    reject_all(c, c->batch, "the context was closed");
    c->batch = NULL;
    seal(c, CTX_CLOSED, "the context was closed");
    release_live(c);
    wait_for_watchdog(c);
    finish_close(c, 0);
    bp_ctx_unref(c);
    return NULL;
}

/* ----------------------------------------------------------------- exported ----- */

bp_context *bp_ctx_new(bp_io *io, int32_t mode, uint32_t id, uint32_t len) {
    int own_fds = (mode & BP_CTX_OWN_FDS) != 0;
    mode &= ~BP_CTX_OWN_FDS;
    if (!bp_running() || (mode != BP_CTX_OWNGIL && mode != BP_CTX_WORKER)) return NULL;
    if (own_fds && mode != BP_CTX_OWNGIL) return NULL; /* a worker shares the main interpreter's objects and their fds */
    bp_context *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->mode = mode;
    c->own_fds = own_fds;
    int fds_ok = bp_wakefd_open(&c->wake, own_fds) == 0;
    fds_ok &= bp_wakefd_open(&c->alert, own_fds) == 0;
    fds_ok &= bp_wakefd_open(&c->answers, own_fds) == 0;
    if (own_fds) fds_ok &= bp_wakefd_open(&c->sig, 1) == 0;
    else c->sig.rd = c->sig.wr = -1;
    c->bell = own_fds ? bp_bell_new() : NULL;
    c->scratch.cap = 64 * 1024;
    c->scratch.buf = malloc(c->scratch.cap);
    c->start = len <= io->cap ? bp_request_new(c, io, id, BP_REQ_START, len) : NULL;
    if (!fds_ok || (own_fds && !c->bell) || !c->scratch.buf || !c->start) {
        close_wakefds(c);
        if (c->bell) bp_bell_stop(c->bell);
        if (c->start) bp_request_free(c->start);
        free(c->scratch.buf);
        free(c);
        return NULL;
    }
    atomic_init(&c->state, CTX_STARTING);
    atomic_init(&c->loop_wake_fd, -1);
    atomic_init(&c->refs, 2); /* JS and the thread */
    c->owner = bp_port_of(io); /* messages from bunpy.send go here */
    atomic_fetch_add(&c->owner->refs, 1);
    pthread_mutex_init(&c->life_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the close watchdog's deadlines */
    pthread_cond_init(&c->life_cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_fetch_add(&bp_live_contexts, 1);
    if (pthread_create(&c->thread, NULL, context_main, c) != 0) {
        atomic_fetch_sub(&bp_live_contexts, 1);
        bp_request_free(c->start);
        c->start = NULL;
        atomic_store(&c->refs, 1);
        bp_ctx_unref(c);
        return NULL;
    }
    c->next_of_owner = c->owner->contexts; /* this is its JS thread */
    c->owner->contexts = c;
    return c;
}

/* A Bun Worker was terminated (its OS thread ended, io.c) with contexts it had not freed:
   Bun runs no more of its code, so nothing would close them, their threads and interpreters
   stayed for the life of the process, and py.close() on the main thread refused to run
   while they lived. Each is closed as JS would with a short grace (its results go nowhere:
   the port is closed) and freed as bp_ctx_free would, by a thread of its own that joins
   it: the last reference must go in the process's fd table, where a sandboxed context's
   pipes are (dropped on the context's own thread, close() would close the numbers of its
   table, and the pipes stayed). Runs on the ending thread, which owns the list. */
#define ORPHAN_GRACE_MS 1000
static void *reap_orphan(void *arg) {
    bp_context *c = arg;
    pthread_join(c->thread, NULL); /* for ever if it is abandoned: so is its thread */
    bp_ctx_unref(c);               /* JS's reference */
    return NULL;
}

static void close_orphan(bp_context *c) {
    (void)bp_ctx_close(c, &c->owner->io, 0, ORPHAN_GRACE_MS); /* BP_ERR_STATE: closing already */
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, reap_orphan, c) != 0) {
        pthread_detach(c->thread); /* JS never reached bp_ctx_free: the only detach */
        bp_ctx_unref(c);
    }
    pthread_attr_destroy(&attr);
}

void bp_port_close_contexts(bp_port *p) {
    bp_context *c = p->contexts;
    p->contexts = NULL;
    while (c) {
        bp_context *next = c->next_of_owner;
        c->next_of_owner = NULL;
        close_orphan(c);
        c = next;
    }
    /* process contexts: their relays close their hosts (the grace, then SIGKILL), and the
       reaper's join waits for the relay thread, which reaps the host */
    bp_relay_take_all(p, close_orphan);
}

/*
 * close: queued requests still run, but no code waits any more: bunpy.call waiting for JS,
 * bunpy.sleep and send back-pressure raise bunpy.Interrupted from now on (close_gen); then the
 * thread tears the context down (bp_loop_close, run_teardown, end_interpreter). A watchdog
 * bounds it all: once `grace_ms` has passed, nothing new starts (hard_close) and whatever
 * runs is interrupted every 100 ms; BP_ABANDON_MS later a thread that still has not
 * finished is abandoned — detached, its interpreter never ended, the close completed with
 * TRUE so JS can say so.
 */
static void *watchdog_main(void *arg) {
    bp_context *c = arg;
    int64_t deadline = bp_now_ns() + (int64_t)c->close_grace_ms * 1000000; /* set before this thread started */
    int64_t give_up = deadline + (int64_t)BP_ABANDON_MS * 1000000;
    pthread_mutex_lock(&c->life_lock);
    for (;;) {
        int s = atomic_load(&c->state);
        if (s > CTX_CLOSING) break; /* ending: the rest is bounded C work */
        int64_t now = bp_now_ns();
        if (now >= give_up) {
            atomic_store(&c->abandoned, 1);
            c->watchdog = 0; /* it drops its own reference below */
            pthread_mutex_unlock(&c->life_lock);
            extern atomic_int bp_finalize_unsafe;
            atomic_store(&bp_finalize_unsafe, 1); /* its interpreter can never be ended */
            release_live(c);
            finish_close(c, 1);
            bp_ctx_wake(c);
            bp_ctx_unref(c);
            return NULL;
        }
        int64_t until = now + 100000000;
        if (now >= deadline) {
            if (!atomic_exchange(&c->hard_close, 1)) {
                bp_ctx_alert(c);
                bp_ctx_wake(c);
            }
            bp_interrupter_start(c, 0); /* one delivery (skipped while one is under way) */
        } else if (until > deadline) {
            until = deadline;
        }
        struct timespec ts = {.tv_sec = until / 1000000000, .tv_nsec = until % 1000000000};
        pthread_cond_timedwait(&c->life_cond, &c->life_lock, &ts);
    }
    c->watchdog = 2; /* the context thread drops its reference (wait_for_watchdog) */
    pthread_cond_broadcast(&c->life_cond);
    pthread_mutex_unlock(&c->life_lock);
    return NULL;
}

int32_t bp_ctx_close(bp_context *c, bp_io *io, uint32_t id, uint32_t grace_ms) {
    int expected = CTX_RUNNING;
    if (!atomic_compare_exchange_strong(&c->state, &expected, CTX_CLOSING) && expected != CTX_STARTING)
        return BP_ERR_STATE;
    bp_request *r = bp_request_new(c, io, id, BP_REQ_CLOSE, 0);
    if (!r) return BP_ERR_MEMORY;
    c->close_req = r;
    c->close_grace_ms = grace_ms;
    atomic_store(&c->close_gen, 1); /* before the wake-ups below: waits end */
    if (bp_ctx_push(c, r) != BP_OK) {
        c->close_req = NULL;
        bp_request_free(r);
        return BP_ERR_STATE;
    }
    if (c->mode == BP_CTX_PROCESS) return BP_OK; /* the relay bounds the close itself */
    bp_ctx_alert(c); /* a bunpy.sleep in progress ends */
    bp_ctx_ref(c);
    pthread_mutex_lock(&c->life_lock);
    c->watchdog = 1;
    pthread_mutex_unlock(&c->life_lock);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, watchdog_main, c) != 0) { /* no bound then */
        pthread_mutex_lock(&c->life_lock);
        c->watchdog = 0;
        pthread_mutex_unlock(&c->life_lock);
        bp_ctx_unref(c);
    }
    pthread_attr_destroy(&attr);
    return BP_OK;
}

void bp_ctx_free(bp_context *c) {
    if (c->mode != BP_CTX_PROCESS) { /* off its JS thread's list (this thread) */
        bp_context **pp = &c->owner->contexts;
        while (*pp && *pp != c) pp = &(*pp)->next_of_owner;
        if (*pp) *pp = c->next_of_owner;
    }
    if (c->mode == BP_CTX_PROCESS) bp_relay_detach(c); /* off its port's poll list (this JS thread) */
    if (atomic_load(&c->abandoned)) pthread_detach(c->thread); /* it may never end */
    else pthread_join(c->thread, NULL);
    bp_ctx_unref(c);
}

int32_t bp_ctx_state(bp_context *c) {
    /* "abandoned" is JS's to say: the close completion tells it (context.ts) */
    return atomic_load(&c->state);
}
double bp_ctx_completed(bp_context *c) { return (double)atomic_load(&c->completed); }

