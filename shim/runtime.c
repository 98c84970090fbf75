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

/* Fact 2: Python must not swallow Ctrl-C. Importing `signal` installs Python's SIGINT
   handler only when the current one is SIG_DFL, so we put a handler there first that
   behaves exactly like the default: end the process by SIGINT. A handler Bun or the user
   installs later replaces ours, as it should. */
static void on_sigint(int sig) {
    signal(sig, SIG_DFL);
    raise(sig);
}

static void keep_ctrl_c(void) {
    struct sigaction old;
    if (sigaction(SIGINT, NULL, &old) != 0) return;
    if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
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
    keep_ctrl_c();
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
