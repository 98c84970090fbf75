/*
 * runtime.c — starting and stopping the embedded CPython runtime.
 *
 * State machine (atomic): UNINITIALISED -> STARTING -> RUNNING -> STOPPING -> STOPPED.
 * Every entry point checks it, so a call after py.close() is an error, not a crash.
 */
#include "context.h"
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sched.h>
#include <errno.h>

static atomic_int state = BP_UNINITIALISED;
/* Calls in flight from JS threads other than the initialising one (Bun Workers): close
   waits for them so that none takes the GIL of a finalised interpreter. */
atomic_int bp_foreign_calls = 0;
/* Set when Py_FinalizeEx is known to crash this process: on 3.12.x once a subinterpreter
   imported asyncio (seen with 3.12.1: free(): invalid pointer), and after a context thread
   was killed while it held interpreter state. py.close() then skips it. */
atomic_int bp_finalize_unsafe = 0;

PyInterpreterState *bp_main_interp;
pthread_mutex_t bp_create_lock = PTHREAD_MUTEX_INITIALIZER; /* interpreter creation/end (fact 4) */
const char *bp_python_dir;       /* bunpy's python/ folder, put on sys.path of every interpreter */
PyThreadState *bp_main_ts;       /* the initialising thread's state, detached between calls */
pthread_t bp_main_thread;
int bp_main_ts_taken;            /* the main thread's port uses bp_main_ts                  */
_Thread_local bp_port *bp_current_port;

int bp_running(void) { return atomic_load_explicit(&state, memory_order_acquire) == BP_RUNNING; }

/* ---- Ctrl-C (fact 2) -------------------------------------------------------------------
 *
 * Our SIGINT handler sits in front of whatever handled SIGINT before it:
 *   - SIG_DFL (no JS listener): end the process by SIGINT, as a plain Bun script does, even
 *     in the middle of a Python call;
 *   - Bun's handler (a JS process.on("SIGINT") listener): if the main JS thread is inside a
 *     Python call, make Python raise KeyboardInterrupt there (PyErr_SetInterruptEx is
 *     async-signal-safe), then run Bun's handler, which queues the JS listener.
 * Bun installs its handler when the first listener is added and resets SIG_DFL when the
 * last one goes, replacing ours: JS tells us (bp_sigint_changed) and the next call into
 * Python puts ours back in front (bp_sigint_refresh). Python's own C-level SIGINT handler
 * is never installed (install_signal_handlers = 0); its Python-level handler is a function
 * that raises KeyboardInterrupt but is not signal.default_int_handler, so asyncio.run()
 * does not take SIGINT over either.
 */
atomic_int bp_sigint_flags = 0;            /* BP_SIGINT_STALE | BP_SIGINT_TRIPPED            */
_Atomic(bp_port *) bp_main_port = NULL;    /* the initialising JS thread's port (io.c)        */
static struct sigaction prev_sigint;       /* the handler ours stands in front of            */
static atomic_int sigint_forwarded = 0;    /* a SIGINT this handler re-sent to the main thread */
/* Main thread, GIL held: 1 while a KeyboardInterrupt waits in a running asyncio loop's
   queue (see python_sigint); cleared when the call ends, so a stale one does nothing. */
static int interrupt_queued;

static int main_in_python(void) {
    bp_port *p = atomic_load_explicit(&bp_main_port, memory_order_acquire);
    return p && *(volatile int *)&p->depth > 0 && bp_running();
}

/* On the main thread only: Python checks signals there (and only there). */
static void interrupt_python(void) {
    atomic_fetch_or(&bp_sigint_flags, BP_SIGINT_TRIPPED);
    PyErr_SetInterruptEx(SIGINT);
}

static void on_sigint(int sig, siginfo_t *info, void *uc) {
    int saved_errno = errno;
    int on_main = atomic_load_explicit(&bp_main_port, memory_order_relaxed) && pthread_equal(pthread_self(), bp_main_thread);
    if (on_main && atomic_exchange(&sigint_forwarded, 0)) { /* our own re-send: Bun saw it already */
        if (main_in_python()) interrupt_python();
        errno = saved_errno;
        return;
    }
    /* contexts with a Python SIGINT handler get it; then it does not end the process */
    int taken = bp_loop_signal_notify(sig);
    struct sigaction prev = prev_sigint;
    if (!(prev.sa_flags & SA_SIGINFO) && prev.sa_handler == SIG_IGN) {
        errno = saved_errno;
        return;
    }
    if (!(prev.sa_flags & SA_SIGINFO) && prev.sa_handler == SIG_DFL) {
        if (taken) {
            errno = saved_errno;
            return;
        }
        signal(sig, SIG_DFL);
        raise(sig);
        errno = saved_errno;
        return;
    }
    if (main_in_python()) {
        if (on_main) {
            interrupt_python();
        } else { /* delivered to another thread: the main thread must see it (and wake from a sleep) */
            atomic_store(&sigint_forwarded, 1);
            pthread_kill(bp_main_thread, SIGINT);
        }
    }
    errno = saved_errno;
    if (prev.sa_flags & SA_SIGINFO) prev.sa_sigaction(sig, info, uc);
    else prev.sa_handler(sig);
}

/* Puts our handler in front of the current one (unless SIGINT is ignored, or ours is there). */
static void install_sigint_handler(void) {
    struct sigaction cur;
    if (sigaction(SIGINT, NULL, &cur) != 0) return;
    if (cur.sa_flags & SA_SIGINFO ? cur.sa_sigaction == on_sigint : cur.sa_handler == SIG_IGN) return;
    prev_sigint = cur;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigint;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

/* JS: SIGINT listeners were added or removed (Bun replaces the handler synchronously). */
void bp_sigint_changed(void) { atomic_fetch_or(&bp_sigint_flags, BP_SIGINT_STALE); }

void bp_sigint_refresh(void) {
    if (atomic_fetch_and(&bp_sigint_flags, ~BP_SIGINT_STALE) & BP_SIGINT_STALE) {
        install_sigint_handler();
        bp_loop_signals_refresh(); /* SIGTERM, once a context asked for it */
    }
}

/* End of an outermost call on the main thread (GIL held, depth already 0): a SIGINT that
   arrived as the call finished must not interrupt the next one. */
void bp_sigint_leave(bp_port *p) {
    /* Thread first: a Bun Worker's call must not take the main thread's pending flag. */
    if (p->depth != 0 || !pthread_equal(pthread_self(), bp_main_thread)) return;
    if (!(atomic_fetch_and(&bp_sigint_flags, ~BP_SIGINT_TRIPPED) & BP_SIGINT_TRIPPED)) return;
    PyOS_InterruptOccurred(); /* clears it */
    interrupt_queued = 0;     /* a loop that ended before its queued interrupt ran */
}

static PyObject *raise_queued_interrupt(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    if (!interrupt_queued) Py_RETURN_NONE; /* queued by a call that has ended */
    interrupt_queued = 0;
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    return NULL;
}

static PyMethodDef queued_interrupt_def = {"bunpy_keyboard_interrupt", raise_queued_interrupt, METH_NOARGS,
                                           "Raises KeyboardInterrupt (Ctrl-C, from inside a running asyncio loop)."};

/* Python's SIGINT handler in the main interpreter. Raising KeyboardInterrupt at any
   bytecode can leave asyncio's loop wedged (an interrupt inside call_soon drops a task's
   next step, and asyncio.run's clean-up then waits for it forever); asyncio.run avoids
   that with its own handler, which we keep out (it would take SIGINT from Bun). So inside
   a running loop the exception is raised from a loop callback, a point asyncio expects
   it; a second Ctrl-C before that callback ran (a callback that never yields) raises at
   once. */
static PyObject *python_sigint(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
    PyObject *loop = NULL;
    if (!interrupt_queued) {
        PyObject *name = PyUnicode_FromString("asyncio");
        PyObject *asyncio = name ? PyImport_GetModule(name) : NULL;
        Py_XDECREF(name);
        loop = asyncio ? PyObject_CallMethod(asyncio, "_get_running_loop", NULL) : NULL;
        Py_XDECREF(asyncio);
        PyErr_Clear();
    }
    if (loop && loop != Py_None) {
        PyObject *cb = PyCFunction_New(&queued_interrupt_def, NULL);
        PyObject *h = cb ? PyObject_CallMethod(loop, "call_soon_threadsafe", "O", cb) : NULL;
        Py_XDECREF(cb);
        Py_DECREF(loop);
        if (h) {
            Py_DECREF(h);
            interrupt_queued = 1;
            Py_RETURN_NONE;
        }
        PyErr_Clear(); /* a closed loop: raise here */
    } else {
        Py_XDECREF(loop);
    }
    interrupt_queued = 0; /* raised here: a queued one would interrupt asyncio's clean-up */
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    return NULL;
}

static PyMethodDef sigint_def = {"bunpy_sigint", python_sigint, METH_VARARGS,
                                 "bunpy_sigint(signum, frame)\n--\n\nRaises KeyboardInterrupt (Ctrl-C during a call from JS)."};

#if PY_VERSION_HEX >= 0x030C0000
/* Signal handlers are process-wide in CPython: signal.getsignal() in any interpreter returns
   the main interpreter's handler object with a new reference, and asyncio.run() asks for
   SIGINT's in every owngil context (a context thread is its interpreter's main thread).
   Those interpreters run under other GILs, so their increments and decrements race; a lost
   increment dropped the count to zero in a context, whose allocator does not own the object:
   "free(): invalid pointer" (fact 15, test/teardown-races.test.ts). So every handler
   installed in the main interpreter is made immortal before it is installed (its count is
   never written again); one replaced later stays allocated, with what it refers to. */
static void make_immortal(PyObject *o) { Py_SET_REFCNT(o, _Py_IMMORTAL_REFCNT); }

/* _signal.signal in the main interpreter; `orig` (its self) is CPython's function. */
static PyObject *immortal_handler_signal(PyObject *orig, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs == 2 && !PyLong_Check(args[1]) && PyCallable_Check(args[1])) make_immortal(args[1]);
    return PyObject_Vectorcall(orig, args, (size_t)nargs, NULL);
}

static PyMethodDef immortal_signal_def = {"signal", (PyCFunction)(void (*)(void))immortal_handler_signal, METH_FASTCALL,
                                          "signal(signalnum, handler)\n--\n\nSets a signal handler (bunpy: made immortal, "
                                          "since every interpreter can read it)."};

/* Replaces mod.<def's name> by def's function, whose self is the original (main interpreter). */
static int wrap_module_function(PyObject *mod, PyMethodDef *def) {
    PyObject *orig = PyObject_GetAttrString(mod, def->ml_name);
    PyObject *fn = orig ? PyCFunction_New(def, orig) : NULL;
    int rc = fn ? PyObject_SetAttrString(mod, def->ml_name, fn) : -1;
    Py_XDECREF(fn);
    Py_XDECREF(orig);
    return rc;
}

/* tracemalloc hooks the allocators of the whole process and keeps its tables under one GIL:
   tracing while an owngil interpreter runs corrupts them (3.12.1, 3.13.0: free(): invalid
   pointer). So it cannot start while one exists (context.c counts them, main GIL held), and
   an owngil context cannot start while it traces (bp_tracemalloc_tracing). 3.12 contexts
   refuse the module itself (bunpy/_context.py); 3.13 does. */
static PyObject *guarded_tracemalloc_start(PyObject *orig, PyObject *const *args, Py_ssize_t nargs) {
    if (atomic_load(&bp_owngil_interps) > 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "bunpy: tracemalloc cannot start while owngil contexts exist (it is not safe with more than "
                        "one GIL); close them first, or use contexts with mode 'worker'");
        return NULL;
    }
    return PyObject_Vectorcall(orig, args, (size_t)nargs, NULL);
}

static PyMethodDef guarded_tracemalloc_start_def = {
    "start", (PyCFunction)(void (*)(void))guarded_tracemalloc_start, METH_FASTCALL,
    "start(nframe=1, /)\n--\n\nStarts tracing Python memory allocations (bunpy: not while owngil contexts exist)."};

/* Main GIL held: whether tracemalloc traces now. */
int bp_tracemalloc_tracing(void) {
    PyObject *m = PyImport_ImportModule("_tracemalloc");
    PyObject *r = m ? PyObject_CallMethod(m, "is_tracing", NULL) : NULL;
    int on = r ? PyObject_IsTrue(r) : 0;
    Py_XDECREF(r);
    Py_XDECREF(m);
    PyErr_Clear();
    return on == 1;
}

static int guard_tracemalloc(void) {
    PyObject *m = PyImport_ImportModule("_tracemalloc");
    int rc = m ? wrap_module_function(m, &guarded_tracemalloc_start_def) : -1;
    Py_XDECREF(m);
    return rc;
}
#endif

/* Python's SIGINT handler (a Python callable) without Python's C-level handler: setting it
   with _signal.signal installs that C handler, so the process's handler is put back. */
static int set_python_sigint(void) {
    struct sigaction keep;
    if (sigaction(SIGINT, NULL, &keep) != 0) return -1;
    PyObject *mod = PyImport_ImportModule("_signal");
    PyObject *fn = mod ? PyCFunction_New(&sigint_def, NULL) : NULL;
#if PY_VERSION_HEX >= 0x030C0000
    if (fn) {
        PyObject_GC_UnTrack(fn); /* refers to nothing: the collector need not see it */
        make_immortal(fn);
    }
#endif
    PyObject *r = fn ? PyObject_CallMethod(mod, "signal", "iO", SIGINT, fn) : NULL;
    sigaction(SIGINT, &keep, NULL);
#if PY_VERSION_HEX >= 0x030C0000
    if (r && wrap_module_function(mod, &immortal_signal_def) < 0) Py_CLEAR(r);
#endif
    Py_XDECREF(r);
    Py_XDECREF(fn);
    Py_XDECREF(mod);
    return r ? 0 : -1;
}

/* Fact 1: bun:ffi opened us (and so libpython) RTLD_LOCAL; C extension modules need
   libpython's symbols global. Re-open the already loaded library with RTLD_GLOBAL. */
static int promote_libpython(char *err, int32_t errlen) {
    Dl_info info;
    if (!dladdr((void *)&Py_InitializeFromConfig, &info) || !info.dli_fname) {
        snprintf(err, (size_t)errlen, "cannot locate libpython in this process (dladdr failed)");
        return -1;
    }
    void *h = dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    if (!h) {
        snprintf(err, (size_t)errlen, "cannot re-open %s with RTLD_GLOBAL: %s", info.dli_fname, dlerror());
        return -1;
    }
    return 0; /* the handle stays open for the life of the process */
}

static int status_error(PyStatus st, const char *what, char *err, int32_t errlen) {
    if (!PyStatus_Exception(st)) return 0;
    snprintf(err, (size_t)errlen, "%s: %s%s%s", what, st.func ? st.func : "", st.func ? ": " : "",
             st.err_msg ? st.err_msg : "failed");
    return -1;
}

/* Wait for a concurrent bp_init (another JS thread) to finish. */
static int32_t wait_started(char *err, int32_t errlen) {
    int s;
    while ((s = atomic_load(&state)) == BP_STARTING) sched_yield();
    if (s == BP_RUNNING) return 1;
    snprintf(err, (size_t)errlen, "Python was closed in this process and cannot be started again");
    return BP_ERR_STATE;
}

/*
 * program: the python executable (sys.executable; its location finds the standard
 * library, a venv's pyvenv.cfg and site-packages). python_dir: bunpy's python/ folder.
 * Returns 0 when this call started Python, 1 when it was already running, <0 on error.
 */
int32_t bp_init(const char *program, const char *python_dir, char *err, int32_t errlen) {
    int expected = BP_UNINITIALISED;
    if (!atomic_compare_exchange_strong(&state, &expected, BP_STARTING)) return wait_started(err, errlen);

    if (Py_IsInitialized()) { /* another copy of the shim (built from other sources) started it */
        snprintf(err, (size_t)errlen, "Python was already started in this process by another build of bunpy's shim "
                                      "(were bunpy's sources changed while it ran?)");
        goto failed;
    }
    if (promote_libpython(err, errlen) < 0) goto failed;
    install_sigint_handler();
    /* Pre-initialise first: it installs the allocators PYTHONMALLOC asks for. The audit hook
       below is allocated with the raw allocator, and Py_FinalizeEx frees it with the one in
       place then: with PYTHONMALLOC=debug set for an extension's sake, a hook allocated
       before pre-initialisation made py.close() abort ("_PyMem_DebugRawFree: bad ID"). */
    PyPreConfig preconfig;
    PyPreConfig_InitPythonConfig(&preconfig);
    preconfig.parse_argv = 0;
    if (status_error(Py_PreInitialize(&preconfig), "pre-initialising Python", err, errlen) < 0) goto failed;
    if (bp_sandbox_install() < 0) { /* before initialising: it then sees every interpreter */
        snprintf(err, (size_t)errlen, "cannot install bunpy's audit hook");
        goto failed;
    }
    if (PyImport_AppendInittab("_bunpy", bp_module_init) < 0) {
        snprintf(err, (size_t)errlen, "cannot register the _bunpy module");
        goto failed;
    }

    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0; /* Bun owns the process's signals */
    config.parse_argv = 0;
    /* Unbuffered like `python -u`: print() output is not lost when Bun exits without
       py.close(), and it interleaves with console.log in order. */
    config.buffered_stdio = 0;
    PyStatus st = PyConfig_SetBytesString(&config, &config.program_name, program);
    if (!PyStatus_Exception(st)) st = PyConfig_SetBytesString(&config, &config.executable, program);
    if (status_error(st, "configuring Python", err, errlen) < 0) { PyConfig_Clear(&config); goto failed; }
    st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (status_error(st, "starting Python", err, errlen) < 0) goto failed;

    /* python/ first on sys.path so `import bunpy` is ours; then our module state. */
    PyObject *sys_path = PySys_GetObject("path"); /* borrowed */
    PyObject *dir = PyUnicode_DecodeFSDefault(python_dir);
    int ok = sys_path && dir && PyList_Insert(sys_path, 0, dir) == 0;
    Py_XDECREF(dir);
    PyObject *mod = ok ? PyImport_ImportModule("_bunpy") : NULL;
    if (!mod) {
        PyObject *exc = bp_err_take();
        PyObject *msg = exc ? PyObject_Str(exc) : NULL;
        snprintf(err, (size_t)errlen, "setting up bunpy in Python failed: %s",
                 msg ? PyUnicode_AsUTF8(msg) : "unknown error");
        Py_XDECREF(msg);
        Py_XDECREF(exc);
        PyErr_Clear();
        Py_FinalizeEx();
        goto failed;
    }
    Py_DECREF(mod);
    if (set_python_sigint() < 0) PyErr_WriteUnraisable(NULL); /* Ctrl-C then ends the process only */
#if PY_VERSION_HEX >= 0x030C0000
    if (guard_tracemalloc() < 0) PyErr_WriteUnraisable(NULL);
#endif
    bp_memcap_install(); /* before any other thread runs Python: see memcap.c */

    bp_main_interp = PyInterpreterState_Main();
    bp_python_dir = strdup(python_dir);
    bp_main_thread = pthread_self();
    bp_main_ts = PyEval_SaveThread(); /* the main GIL is free between calls */
    atomic_store(&state, BP_RUNNING);
    return 0;

failed:
    atomic_store(&state, BP_STOPPED);
    return BP_ERR_STATE;
}

/* Called by py.close() on the initialising thread, outside any Python call. */
int32_t bp_finalize(bp_io *io) {
    bp_port *p = bp_port_of(io);
    if (!pthread_equal(pthread_self(), bp_main_thread) || p->ts != bp_main_ts) return BP_ERR_THREAD;
    if (p->held || p->depth > 0) return BP_ERR_THREAD; /* inside a Python -> JS callback */
    extern atomic_int bp_live_contexts;
    if (atomic_load(&bp_live_contexts) > 0) return BP_ERR_BUSY; /* their threads need the runtime */
    int expected = BP_RUNNING;
    if (!atomic_compare_exchange_strong(&state, &expected, BP_STOPPING)) return BP_ERR_STATE;
    while (atomic_load(&bp_foreign_calls) > 0) usleep(100);
    PyEval_RestoreThread(bp_main_ts);
    int rc;
    if (atomic_load(&bp_finalize_unsafe)) {
        /* Py_FinalizeEx would crash (see bp_finalize_unsafe): do what users rely on —
           join threads, run atexit handlers, flush — and leave the runtime to process exit. */
        PyObject *m = PyImport_ImportModule("bunpy._context");
        PyObject *r = m ? PyObject_CallMethod(m, "shutdown_without_finalize", NULL) : NULL;
        rc = r ? 0 : -1;
        if (!r) PyErr_WriteUnraisable(m);
        Py_XDECREF(r);
        Py_XDECREF(m);
        PyEval_SaveThread();
    } else {
        rc = Py_FinalizeEx();
    }
    bp_main_ts = NULL;
    p->ts = NULL;
    atomic_store(&state, BP_STOPPED);
    return rc < 0 ? BP_ERR_PYTHON : BP_OK;
}
