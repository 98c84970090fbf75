/*
 * sandbox.c — policies enforced by a C audit hook (PySys_AddAuditHook, installed before
 * Py_Initialize so it sees every interpreter). Fact 10 in docs/architecture.md.
 *
 * Always refused, in every interpreter: forking without exec (os.fork, os.forkpty, and
 * libc's fork family through ctypes): a forked copy of a Bun process has no JS runtime.
 * A context can refuse more: process creation, ctypes, sockets, imports of listed
 * modules, opening files outside given directories, more than maxThreads threads.
 *
 * On its own this guards against accidents: a C extension or a raw system call raises no
 * audit event. On Linux the kernel is the wall behind it (seccomp.c, landlock.c); the hook
 * refuses first, with a message naming the rule, and covers what the kernel cannot see
 * (imports). docs/sandbox.md has the threat model.
 */
#include "context.h"
#include <fcntl.h>
#include <sys/socket.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static int refuse(const char *event, const char *rule, const char *why) {
    PyErr_Format(PyExc_PermissionError, "bunpy sandbox: %s is refused (rule: %s): %s", event, rule, why);
    return -1;
}

static int is_one_of(const char *s, const char *const *names) {
    for (; *names; names++)
        if (strcmp(s, *names) == 0) return 1;
    return 0;
}

static const char *const FORK_SYMBOLS[] = {"fork", "vfork", "forkpty", "__fork", "_Fork", NULL};
static const char *const PROCESS_SYMBOLS[] = {"system", "popen", "execv", "execve", "execvp", "execvpe", "execl",
                                              "execle", "execlp", "posix_spawn", "posix_spawnp", "clone", NULL};
/* (os.spawn* and pty.spawn fork first on POSIX: the always-on fork rule refuses them) */
static const char *const PROCESS_EVENTS[] = {"os.system", "os.exec", "os.posix_spawn", "subprocess.Popen", NULL};

/* The policy of the code running on this thread: its context's, or — for a thread that
   Python code started inside an owngil context — the policy of that interpreter's context.
   (Threads started in a worker context run in the main interpreter: no policy.) */
static bp_policy *current_policy(void) {
    bp_context *c = bp_this_context;
    if (c) return &c->policy;
    bp_interp *st = bp_interp_get();
    if (!st) return NULL;
    return st->ctx ? &st->ctx->policy : st->left_policy;
}

static long int_arg(PyObject *args, Py_ssize_t i) {
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) <= i || !PyLong_Check(PyTuple_GET_ITEM(args, i))) return -1;
    return PyLong_AsLong(PyTuple_GET_ITEM(args, i));
}

static const char *symbol_name(PyObject *args, Py_ssize_t i) {
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) <= i) return NULL;
    PyObject *v = PyTuple_GET_ITEM(args, i);
    if (PyUnicode_Check(v)) return PyUnicode_AsUTF8(v);
    if (PyBytes_Check(v)) return PyBytes_AS_STRING(v);
    return NULL;
}

static int module_denied(bp_policy *pol, PyObject *args) {
    /* read once: a str subclass's __hash__ may let the GIL go, and a context leaving this
       thread behind moves its policy meanwhile (the set itself lives on) */
    PyObject *deny = pol->deny_imports;
    if (!deny || !PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 1) return 0;
    PyObject *name = PyTuple_GET_ITEM(args, 0);
    if (!PyUnicode_Check(name)) return 0;
    int hit = PySet_Contains(deny, name);
    if (hit) return hit;
    Py_ssize_t dot = PyUnicode_FindChar(name, '.', 0, PyUnicode_GET_LENGTH(name), 1);
    if (dot <= 0) return 0;
    PyObject *top = PyUnicode_Substring(name, 0, dot);
    if (!top) return -1;
    hit = PySet_Contains(deny, top);
    Py_DECREF(top);
    return hit;
}

/* Modules that create or enter other interpreters: their threads carry no policy, and
   running code in the main interpreter leaves the context. */
static const char *const INTERP_MODULES[] = {"_interpreters", "_xxsubinterpreters", "_xxinterpchannels",
                                             "_interpqueues", "_interpchannels", "interpreters",
                                             "concurrent.interpreters", "_xxinterpqueues", NULL};

/* Is `path` inside one of the allowed directories (compared after realpath)? */
static int path_allowed(bp_policy *pol, const char *path) {
    char real[PATH_MAX];
    if (!realpath(path, real)) {
        /* a file about to be created: check its directory */
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash == dir) slash[1] = 0;
        else if (slash) *slash = 0;
        else snprintf(dir, sizeof dir, ".");
        if (!realpath(dir, real)) return 0;
    }
    size_t n = strlen(real);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(pol->allow_paths); i++) {
        const char *dir = PyUnicode_AsUTF8(PyTuple_GET_ITEM(pol->allow_paths, i));
        if (!dir) return 0;
        size_t d = strlen(dir);
        if (n >= d && strncmp(real, dir, d) == 0 && (n == d || real[d] == '/' || (d > 0 && dir[d - 1] == '/'))) return 1;
    }
    return 0;
}

/* open(path, mode, flags): reads of Python's own files stay allowed (imports open them). */
static int open_allowed(bp_policy *pol, PyObject *args) {
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 1) return 1;
    PyObject *path = PyTuple_GET_ITEM(args, 0);
    if (PyLong_Check(path)) return 1; /* an fd that is already open */
    PyObject *bytes = NULL;
    if (!PyUnicode_FSConverter(path, &bytes)) {
        PyErr_Clear();
        return 1;
    }
    const char *p = PyBytes_AS_STRING(bytes);
    if (p[0] != '/' && pol->files_by_kernel) {
        /* relative: to the cwd, or to a dir_fd the "open" event does not carry. Resolving it
           against the cwd here would refuse legitimate opens (and pass others); the
           Landlock domain resolves it as the OS does. */
        Py_DECREF(bytes);
        return 1;
    }
    int writing = 0;
    PyObject *mode = PyTuple_GET_SIZE(args) > 1 ? PyTuple_GET_ITEM(args, 1) : NULL;
    PyObject *flags = PyTuple_GET_SIZE(args) > 2 ? PyTuple_GET_ITEM(args, 2) : NULL;
    if (mode && PyUnicode_Check(mode)) {
        const char *m = PyUnicode_AsUTF8(mode);
        writing = m && strpbrk(m, "wax+") != NULL;
    }
    if (flags && PyLong_Check(flags)) {
        long f = PyLong_AsLong(flags);
        writing = writing || (f & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND));
    }
    int ok = path_allowed(pol, p);
    if (!ok && !writing && pol->read_paths) {
        bp_policy reads = *pol;
        reads.allow_paths = pol->read_paths;
        ok = path_allowed(&reads, p);
    }
    Py_DECREF(bytes);
    return ok;
}

/* Changes to a file that are not opens (its mode, owner, times, extended attributes,
   size): Landlock has no right for most of them, so here they are allowed only beneath the
   writable directories (compared after realpath, so a symlink is judged by its target), or
   through a descriptor open for writing. A relative path with a dir_fd cannot be placed. */
static const char *const META_EVENTS[] = {"os.chmod", "os.chown", "os.utime", "os.setxattr", "os.removexattr",
                                          "os.chflags", "os.truncate", NULL};

static int meta_allowed(bp_policy *pol, const char *event, PyObject *args) {
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 1) return 0;
    PyObject *path = PyTuple_GET_ITEM(args, 0);
    if (PyLong_Check(path)) {
        long fd = PyLong_AsLong(path);
        if (fd == -1 && PyErr_Occurred()) PyErr_Clear();
        int fl = fd >= 0 && fd <= INT_MAX ? fcntl((int)fd, F_GETFL) : -1;
#ifdef O_PATH
        if (fl >= 0 && (fl & O_PATH)) return 0;
#endif
        return fl >= 0 && (fl & O_ACCMODE) != O_RDONLY;
    }
    long dir_fd = strcmp(event, "os.chmod") == 0                                     ? int_arg(args, 2)
                  : strcmp(event, "os.chown") == 0 || strcmp(event, "os.utime") == 0 ? int_arg(args, 3)
                                                                                     : -1;
    PyObject *bytes = NULL;
    if (!PyUnicode_FSConverter(path, &bytes)) {
        PyErr_Clear();
        return 0;
    }
    const char *p = PyBytes_AS_STRING(bytes);
    int ok = (p[0] == '/' || dir_fd < 0) && path_allowed(pol, p);
    Py_DECREF(bytes);
    return ok;
}

/* socket.connect/bind(sock, address): the port of an (host, port, ...) address, or -1 */
static long port_of(PyObject *args) {
    if (!PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 2) return -1;
    PyObject *addr = PyTuple_GET_ITEM(args, 1);
    if (!PyTuple_Check(addr) || PyTuple_GET_SIZE(addr) < 2 || !PyLong_Check(PyTuple_GET_ITEM(addr, 1))) return -1;
    long p = PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
    if (p == -1 && PyErr_Occurred()) PyErr_Clear();
    return p;
}

static int port_listed(PyObject *ports, long port) {
    for (Py_ssize_t i = 0; ports && i < PyTuple_GET_SIZE(ports); i++) {
        PyObject *v = PyTuple_GET_ITEM(ports, i);
        if (PyLong_Check(v) && PyLong_AsLong(v) == port) return 1;
    }
    return 0;
}

/* maxThreads: the live threads the context started (its own thread not counted), or -1
   with an exception set. owngil: the interpreter's other thread states (threads those
   threads start included); worker: the threading threads bunpy._context marked as the
   context's (track_threads). */
static long threads_started(const bp_policy *pol) {
    if (pol->owngil) {
        long n = -1;
        for (PyThreadState *t = PyInterpreterState_ThreadHead(PyInterpreterState_Get()); t; t = PyThreadState_Next(t)) n++;
        return n;
    }
    PyObject *m = PyImport_ImportModule("bunpy._context");
    PyObject *r = m ? PyObject_CallMethod(m, "count_started", "k", pol->ident) : NULL;
    Py_XDECREF(m);
    long n = r ? PyLong_AsLong(r) : -1;
    Py_XDECREF(r);
    return n;
}

static int audit_hook(const char *event, PyObject *args, void *unused) {
    (void)unused;
    /* cheap first-character filters: the hook sees every audited event */
    switch (event[0]) {
    case 'o':
        if (strcmp(event, "os.fork") == 0 || strcmp(event, "os.forkpty") == 0)
            return refuse(event, "no fork without exec",
                          "a forked copy of a Bun process has no JS runtime; use subprocess instead");
        break;
    case 'c':
        if (strcmp(event, "ctypes.dlsym") == 0) {
            const char *sym = symbol_name(args, 1);
            if (sym && is_one_of(sym, FORK_SYMBOLS))
                return refuse(event, "no fork without exec", "libc's fork cannot be called through ctypes");
        }
        break;
    case '_': /* _thread.start_new_thread, _thread.start_joinable_thread (3.12+) */
        if (strncmp(event, "_thread.start_", 14) != 0) return 0;
        break;
    case 'i':
    case 's':
    case 'p':
        break;
    default:
        return 0;
    }
    bp_policy *pol = current_policy();
    if (!pol || !pol->active) return 0;
    if (pol->refuse_processes) {
        if (is_one_of(event, PROCESS_EVENTS)) return refuse(event, "no processes", "this context may not start processes");
        if (strcmp(event, "ctypes.dlsym") == 0) {
            const char *sym = symbol_name(args, 1);
            if (sym && is_one_of(sym, PROCESS_SYMBOLS))
                return refuse(event, "no processes", "this context may not start processes, ctypes included");
        }
    }
    if (pol->env_rule && strcmp(event, "os.system") == 0)
        return refuse(event, "env", "the shell would get the whole process environment: use subprocess");
    /* an owngil context's os.environ edits its own copy (bunpy._context.keep_environment);
       the C environment is Bun's: LD_PRELOAD set there reaches every program Bun starts */
    if (pol->env_rule && pol->owngil && (strcmp(event, "os.putenv") == 0 || strcmp(event, "os.unsetenv") == 0))
        return refuse(event, "env", "the C environment is the whole process's: change os.environ, which is this context's own");
    if (pol->refuse_ctypes && strncmp(event, "ctypes.", 7) == 0)
        return refuse(event, "no ctypes", "this context may not use ctypes");
    if (pol->refuse_sockets && strncmp(event, "socket.", 7) == 0 && strcmp(event, "socket.gethostname") != 0) {
        /* AF_UNIX stays: asyncio's event loop wakes itself through a local socketpair */
        if (strcmp(event, "socket.__new__") == 0 && int_arg(args, 1) == AF_UNIX) return 0;
        return refuse(event, "no sockets", "this context may not use the network");
    }
    if (pol->net_rules && (strcmp(event, "socket.connect") == 0 || strcmp(event, "socket.bind") == 0)) {
        int bind = event[7] == 'b';
        long port = port_of(args);
        if (port >= 0 && !port_listed(bind ? pol->bind_ports : pol->connect_ports, port))
            return refuse(event, bind ? "network.bind" : "network.connect", "this port is not in the context's list");
    }
    if (event[0] == '_') {
        if (pol->max_threads < 0) return 0;
        long n = threads_started(pol);
        if (n < 0) return -1;
        return n >= pol->max_threads
                   ? refuse(event, "maxThreads", "this context already runs as many threads as it may start")
                   : 0;
    }
    if (strcmp(event, "import") == 0) {
        int denied = module_denied(pol, args);
        if (denied < 0) return -1;
        if (denied) return refuse(event, "denied imports", "this module is on the context's deny list");
        pol = current_policy(); /* again: hashing a str subclass ran Python code (see module_denied) */
        if (!pol || !pol->active) return 0;
        const char *name = symbol_name(args, 0);
        if (name && is_one_of(name, INTERP_MODULES))
            return refuse(event, "no other interpreters", "a sandboxed context may not create or enter interpreters");
        /* the context imported it at start (and guarded fork_exec): a fresh copy is a way around */
        if (name && (pol->refuse_processes || pol->env_rule) && strcmp(name, "_posixsubprocess") == 0)
            return refuse(event, pol->refuse_processes ? "no processes" : "env", "_posixsubprocess cannot be imported again here");
        if (pol->refuse_ctypes && PyTuple_Check(args) && PyTuple_GET_SIZE(args) > 0) {
            const char *name = symbol_name(args, 0);
            if (name && (strcmp(name, "ctypes") == 0 || strcmp(name, "_ctypes") == 0 || strncmp(name, "ctypes.", 7) == 0))
                return refuse(event, "no ctypes", "this context may not use ctypes");
        }
    }
    if (pol->allow_paths && strncmp(event, "os.", 3) == 0 && is_one_of(event, META_EVENTS) && !meta_allowed(pol, event, args))
        return refuse(event, "files only in allowed directories",
                      "a file's mode, owner, times, attributes or size change only beneath the writable directories");
    if (pol->allow_paths && strcmp(event, "open") == 0 && !open_allowed(pol, args))
        return refuse(event, "files only in allowed directories", "this path is outside them");
    return 0;
}

int bp_sandbox_install(void) { return PySys_AddAuditHook(audit_hook, NULL); }

static PyObject *call_original(PyCFunction fn, int flags, PyObject *self, PyObject *const *args, Py_ssize_t nargs);

/* _posixsubprocess.fork_exec raises no audit event: a sandboxed context with processes
   refused replaces it by a C function that asks the calling thread's policy and then calls
   CPython's function through its C pointer. Nothing reachable from Python (no closure, no
   default, no __wrapped__) holds the original: the guard's __self__ is the module itself.
   Worker contexts share the module with the main interpreter, which the policy lets through. */
static PyCFunction orig_fork_exec;
static int orig_fork_exec_flags;

/* fork_exec's `env` argument (CPython 3.11-3.13): None lets the child inherit the process's
   environment, which an `env` rule hides from the context */
#define FORK_EXEC_ENV 5

static PyObject *guarded_fork_exec(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    bp_policy *pol = current_policy();
    if (pol && pol->active && pol->refuse_processes) {
        refuse("_posixsubprocess.fork_exec", "no processes", "this context may not start processes");
        return NULL;
    }
    if (!(pol && pol->active && pol->env_rule && nargs > FORK_EXEC_ENV && args[FORK_EXEC_ENV] == Py_None))
        return call_original(orig_fork_exec, orig_fork_exec_flags, mod, args, nargs);
    /* the context's own environment (os.environ, filtered at its start) instead */
    PyObject *setup = PyImport_ImportModule("bunpy._context");
    PyObject *env = setup ? PyObject_CallMethod(setup, "environment", NULL) : NULL;
    Py_XDECREF(setup);
    /* the context's code can replace environment() (or the module): None here would let the
       child inherit the whole process environment again */
    if (env && !PyList_CheckExact(env)) {
        Py_DECREF(env);
        env = NULL;
        refuse("_posixsubprocess.fork_exec", "env", "bunpy._context.environment() was replaced: pass env= explicitly");
    }
    PyObject **copy = env ? PyMem_Malloc((size_t)nargs * sizeof *copy) : NULL;
    if (!copy) {
        Py_XDECREF(env);
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    }
    memcpy(copy, args, (size_t)nargs * sizeof *copy);
    copy[FORK_EXEC_ENV] = env;
    PyObject *r = call_original(orig_fork_exec, orig_fork_exec_flags, mod, copy, nargs);
    PyMem_Free(copy);
    Py_DECREF(env);
    return r;
}

static PyMethodDef fork_exec_def = {"fork_exec", (PyCFunction)(void (*)(void))guarded_fork_exec, METH_FASTCALL,
                                    "fork_exec(...)\n--\n\nStarts a process (checked by bunpy first)."};

static int guard_fork_exec(void) {
    PyObject *mod = PyImport_ImportModule("_posixsubprocess");
    if (!mod) return -1;
    PyObject *f = PyObject_GetAttrString(mod, "fork_exec");
    int rc = -1;
    static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
    if (f && PyCFunction_Check(f) && ((PyCFunctionObject *)f)->m_ml == &fork_exec_def) {
        rc = 0; /* guarded already (worker contexts share the module) */
    } else if (f && PyCFunction_Check(f)) {
        pthread_mutex_lock(&once);
        if (!orig_fork_exec) {
            orig_fork_exec = PyCFunction_GET_FUNCTION(f);
            orig_fork_exec_flags = PyCFunction_GET_FLAGS(f);
        }
        int same = orig_fork_exec == PyCFunction_GET_FUNCTION(f);
        pthread_mutex_unlock(&once);
        PyObject *g = same ? PyCFunction_NewEx(&fork_exec_def, mod, NULL) : NULL;
        if (!same) PyErr_SetString(PyExc_RuntimeError, "bunpy: _posixsubprocess.fork_exec is not CPython's own");
        rc = g ? PyObject_SetAttrString(mod, "fork_exec", g) : -1;
        /* subprocess keeps its own reference (`_fork_exec`) when imported before: replace it */
        PyObject *modules = rc == 0 ? PyImport_GetModuleDict() : NULL;
        PyObject *sp = modules ? PyDict_GetItemString(modules, "subprocess") : NULL;
        PyObject *bound = sp ? PyObject_GetAttrString(sp, "_fork_exec") : NULL;
        if (!bound) PyErr_Clear();
        else if (PyCFunction_Check(bound) && PyCFunction_GET_FUNCTION(bound) == orig_fork_exec)
            rc = PyObject_SetAttrString(sp, "_fork_exec", g);
        Py_XDECREF(bound);
        Py_XDECREF(g);
    } else if (f) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy: _posixsubprocess.fork_exec is not CPython's own");
    }
    Py_XDECREF(f);
    Py_DECREF(mod);
    return rc;
}

/* Reads a policy dict (made by src/context.ts) into `pol`, in the current interpreter:
   {"processes": bool, "ctypes": bool, "sockets": bool, "deny_imports": [str], "files": [str] | None,
    "read_paths": [str], "network": {...} | None, "max_threads": int | None, "require_kernel": bool,
    "memory_limit": int (owngil only), "env": [str] | None, "shared": bool}
   — booleans say what is allowed. */
int bp_policy_load(bp_policy *pol, PyObject *spec) {
    memset(pol, 0, sizeof *pol);
    if (spec == Py_None) return 0;
    if (!PyDict_Check(spec)) {
        PyErr_SetString(PyExc_TypeError, "bunpy: a sandbox policy must be a dict");
        return -1;
    }
    pol->active = 1;
    PyObject *v;
    v = PyDict_GetItemString(spec, "processes");
    pol->refuse_processes = v && v == Py_False;
    v = PyDict_GetItemString(spec, "env");
    pol->env_rule = v && v != Py_None;
    if (pol->refuse_processes || pol->env_rule) {
        pol->active = 0; /* the import of _posixsubprocess here is the context's own */
        int rc = guard_fork_exec();
        pol->active = 1;
        if (rc < 0) return -1;
    }
    v = PyDict_GetItemString(spec, "ctypes");
    pol->refuse_ctypes = v && v == Py_False;
    v = PyDict_GetItemString(spec, "sockets");
    pol->refuse_sockets = v && v == Py_False;
    v = PyDict_GetItemString(spec, "shared");
    pol->refuse_shared = v && v == Py_False;
    v = PyDict_GetItemString(spec, "require_kernel");
    pol->require_kernel = v == Py_True;
    v = PyDict_GetItemString(spec, "max_threads");
    pol->max_threads = v && PyLong_Check(v) ? PyLong_AsLong(v) : -1;
    if (pol->max_threads == -1 && PyErr_Occurred()) return -1;
    v = PyDict_GetItemString(spec, "memory_limit");
    pol->memory_limit = v && PyLong_Check(v) ? PyLong_AsSize_t(v) : 0;
    if (pol->memory_limit == (size_t)-1 && PyErr_Occurred()) return -1;
    v = PyDict_GetItemString(spec, "deny_imports");
    if (v && v != Py_None && !(pol->deny_imports = PyFrozenSet_New(v))) return -1;
    v = PyDict_GetItemString(spec, "files");
    if (v && v != Py_None && !(pol->allow_paths = PySequence_Tuple(v))) return -1;
    v = PyDict_GetItemString(spec, "network");
    if (v && v != Py_None) {
        PyObject *c = PyDict_Check(v) ? PyDict_GetItemString(v, "connect") : NULL;
        PyObject *b = PyDict_Check(v) ? PyDict_GetItemString(v, "bind") : NULL;
        if (!c || !b) {
            PyErr_SetString(PyExc_TypeError, "bunpy: network must be {connect: [int], bind: [int]}");
            return -1;
        }
        pol->net_rules = 1;
        if (!(pol->connect_ports = PySequence_Tuple(c)) || !(pol->bind_ports = PySequence_Tuple(b))) return -1;
    }
    v = PyDict_GetItemString(spec, "read_paths");
    if (v && v != Py_None && !(pol->read_paths = PySequence_Tuple(v))) return -1;
    return 0;
}

void bp_policy_clear(bp_policy *pol) {
    pol->active = 0;
    Py_CLEAR(pol->deny_imports);
    Py_CLEAR(pol->allow_paths);
    Py_CLEAR(pol->read_paths);
    Py_CLEAR(pol->connect_ports);
    Py_CLEAR(pol->bind_ports);
    pol->net_rules = 0;
    pol->files_by_kernel = 0;
}

/* _bunpy.refused(rule) -> bool: lets Python-level guards (fork_exec) ask the policy. */
int bp_policy_refuses(const char *rule) {
    bp_policy *pol = current_policy();
    if (!pol || !pol->active) return 0;
    if (strcmp(rule, "processes") == 0) return pol->refuse_processes;
    if (strcmp(rule, "ctypes") == 0) return pol->refuse_ctypes;
    if (strcmp(rule, "sockets") == 0) return pol->refuse_sockets;
    if (strcmp(rule, "shared") == 0) return pol->refuse_shared;
    if (strcmp(rule, "threads") == 0 && pol->max_threads >= 0) {
        long n = threads_started(pol);
        if (n < 0) PyErr_Clear(); /* cannot count: refuse (fail closed) */
        return n < 0 || n >= pol->max_threads;
    }
    return 0;
}

/* ---- extension loads in owngil contexts (facts 3 and 13 in docs/architecture.md) ---------------------
 *
 * Every load of an extension module from a file ends in _imp.create_dynamic(spec): the
 * finder, spec_from_file_location + module_from_spec, ExtensionFileLoader, load_module.
 * In an owngil context the attribute is replaced by a C function that checks the spec
 * first and then calls CPython's own function through its C pointer, so no Python object
 * holding the original is left in the interpreter to be reached. A fresh `_imp` module
 * (made with _imp.create_builtin) gets the same treatment.
 *
 * The wrapper's __self__ is a tuple (imp module, refused names, allowed names or None,
 * extension directory or None): all immutable.
 */
typedef PyObject *(*bp_fast_fn)(PyObject *, PyObject *const *, Py_ssize_t);

/* CPython's C functions behind _imp.create_dynamic/create_builtin: one libpython per
   process, so plain C pointers (no PyObject) are valid in every interpreter. */
static PyCFunction orig_create_dynamic, orig_create_builtin;
static int orig_create_dynamic_flags, orig_create_builtin_flags;

static PyObject *call_original(PyCFunction fn, int flags, PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    switch (flags & (METH_VARARGS | METH_FASTCALL | METH_NOARGS | METH_O | METH_KEYWORDS)) {
    case METH_FASTCALL:
        return ((bp_fast_fn)(void (*)(void))fn)(self, args, nargs);
    case METH_O:
        if (nargs != 1) break;
        return fn(self, args[0]);
    case METH_VARARGS: {
        PyObject *tuple = PyTuple_New(nargs);
        if (!tuple) return NULL;
        for (Py_ssize_t i = 0; i < nargs; i++) PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
        PyObject *r = fn(self, tuple);
        Py_DECREF(tuple);
        return r;
    }
    }
    PyErr_SetString(PyExc_TypeError, "bunpy: unexpected arguments for an import function");
    return NULL;
}

/* Is `origin` a file directly inside `dir` (both compared after realpath)? */
static int in_directory(PyObject *origin, PyObject *dir) {
    PyObject *bytes = NULL;
    if (!PyUnicode_Check(origin) || !PyUnicode_FSConverter(origin, &bytes)) {
        PyErr_Clear();
        return 0;
    }
    char real[PATH_MAX];
    int ok = realpath(PyBytes_AS_STRING(bytes), real) != NULL;
    Py_DECREF(bytes);
    if (!ok) return 0;
    char *slash = strrchr(real, '/');
    if (!slash) return 0;
    *slash = 0;
    const char *d = PyUnicode_AsUTF8(dir);
    if (!d) {
        PyErr_Clear();
        return 0;
    }
    return strcmp(real, d) == 0;
}

/* 0 when the spec may load, -1 with ImportError set when it may not. */
static int check_extension(PyObject *policy, PyObject *spec) {
    PyObject *refused = PyTuple_GET_ITEM(policy, 1), *allowed = PyTuple_GET_ITEM(policy, 2);
    PyObject *dir = PyTuple_GET_ITEM(policy, 3);
    PyObject *name = PyObject_GetAttrString(spec, "name");
    if (!name) return -1;
    if (!PyUnicode_Check(name)) {
        Py_DECREF(name);
        PyErr_SetString(PyExc_TypeError, "bunpy: an extension module's spec.name must be a str");
        return -1;
    }
    PyObject *origin = PyObject_GetAttrString(spec, "origin");
    if (!origin) {
        Py_DECREF(name);
        return -1;
    }
    /* the init function is looked up by the last part of the name (PyInit_<last>) */
    Py_ssize_t len = PyUnicode_GET_LENGTH(name);
    Py_ssize_t dot = PyUnicode_FindChar(name, '.', 0, len, -1);
    PyObject *last = dot >= 0 ? PyUnicode_Substring(name, dot + 1, len) : Py_NewRef(name);
    int rc = 0;
    const char *why = NULL;
    if (!last) rc = -1;
    else if ((rc = PySet_Contains(refused, last)) > 0)
        why = "is not safe in a subinterpreter on this Python; the pure-Python version of the module is used instead "
              "where there is one";
    else if (rc == 0 && allowed != Py_None) {
        rc = PySet_Contains(allowed, name);
        if (rc == 0 || (rc > 0 && dir != Py_None && !in_directory(origin, dir))) {
            rc = 1;
            why = "is not known to be multi-phase: single-phase extension modules cannot load in an owngil context "
                  "on Python 3.12 (trying one corrupts the process); use a context with mode 'worker' (or Python 3.13)";
        } else if (rc > 0) {
            rc = 0;
        }
    }
    Py_XDECREF(last);
    if (rc > 0) {
        PyObject *msg = PyUnicode_FromFormat("bunpy: the extension module %U %s", name, why);
        if (msg) {
            PyErr_SetImportError(msg, name, origin == Py_None ? NULL : origin);
            Py_DECREF(msg);
        }
        rc = -1;
    }
    Py_DECREF(name);
    Py_DECREF(origin);
    return rc;
}

static PyObject *guarded_create_builtin(PyObject *policy, PyObject *const *args, Py_ssize_t nargs);

static PyObject *guarded_create_dynamic(PyObject *policy, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "create_dynamic(spec, file=None, /)");
        return NULL;
    }
    if (check_extension(policy, args[0]) < 0) return NULL;
    return call_original(orig_create_dynamic, orig_create_dynamic_flags, PyTuple_GET_ITEM(policy, 0), args, nargs);
}

static PyMethodDef create_dynamic_def = {"create_dynamic", (PyCFunction)(void (*)(void))guarded_create_dynamic,
                                         METH_FASTCALL, "create_dynamic(spec, file=None, /)\n--\n\n"
                                                        "Create an extension module (checked by bunpy first)."};
static PyMethodDef create_builtin_def = {"create_builtin", (PyCFunction)(void (*)(void))guarded_create_builtin,
                                         METH_FASTCALL, "create_builtin(spec, /)\n--\n\nCreate a built-in module."};

/* Replaces imp.create_dynamic/create_builtin by guarded versions. policy[0] is `imp`. */
static int guard_imp(PyObject *imp, PyObject *refused, PyObject *allowed, PyObject *dir) {
    PyObject *policy = PyTuple_Pack(4, imp, refused, allowed, dir);
    if (!policy) return -1;
    PyMethodDef *defs[2] = {&create_dynamic_def, &create_builtin_def};
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        PyObject *fn = PyCFunction_NewEx(defs[i], policy, NULL);
        rc = fn ? PyObject_SetAttrString(imp, defs[i]->ml_name, fn) : -1;
        Py_XDECREF(fn);
    }
    Py_DECREF(policy);
    return rc;
}

static PyObject *guarded_create_builtin(PyObject *policy, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *mod = call_original(orig_create_builtin, orig_create_builtin_flags, PyTuple_GET_ITEM(policy, 0), args, nargs);
    if (!mod || !PyModule_Check(mod)) return mod;
    /* a second `_imp` module would bring back the unguarded functions: guard it too */
    const char *name = PyModule_GetName(mod);
    if (!name) PyErr_Clear();
    else if (strcmp(name, "_imp") == 0 &&
             guard_imp(mod, PyTuple_GET_ITEM(policy, 1), PyTuple_GET_ITEM(policy, 2), PyTuple_GET_ITEM(policy, 3)) < 0)
        Py_CLEAR(mod);
    return mod;
}

/* Takes CPython's function `name` from `imp`, checking it is the C function we expect. */
static int take_original(PyObject *imp, const char *name, PyMethodDef *ours, PyCFunction *fn, int *flags) {
    PyObject *f = PyObject_GetAttrString(imp, name);
    if (!f) return -1;
    int ok = PyCFunction_Check(f) && ((PyCFunctionObject *)f)->m_ml != ours;
    if (ok && !*fn) {
        *fn = PyCFunction_GET_FUNCTION(f);
        *flags = PyCFunction_GET_FLAGS(f);
    }
    int already = PyCFunction_Check(f) && ((PyCFunctionObject *)f)->m_ml == ours;
    Py_DECREF(f);
    if (!ok && !already) {
        PyErr_Format(PyExc_RuntimeError, "bunpy: _imp.%s is not CPython's own function", name);
        return -1;
    }
    return already ? 1 : 0;
}

/* _bunpy.guard_extensions(refused, allowed, dir): in the current (owngil) interpreter,
   refuse to load extension modules whose name's last part is in `refused`, and — when
   `allowed` is not None — any whose name is not in `allowed` or whose file is not directly
   in `dir` (None: any directory). Called once by bunpy._context.setup; a second call is an
   error. */
PyObject *bp_guard_extensions(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    (void)m;
    if (nargs != 3 || !PyFrozenSet_Check(args[0]) || (args[1] != Py_None && !PyFrozenSet_Check(args[1])) ||
        (args[2] != Py_None && !PyUnicode_Check(args[2]))) {
        PyErr_SetString(PyExc_TypeError, "guard_extensions(refused: frozenset, allowed: frozenset | None, dir: str | None)");
        return NULL;
    }
    PyObject *imp = PyImport_ImportModule("_imp");
    if (!imp) return NULL;
    /* the first interpreter to get here records the C pointers (same in every interpreter) */
    static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&once);
    int a = take_original(imp, "create_dynamic", &create_dynamic_def, &orig_create_dynamic, &orig_create_dynamic_flags);
    int b = a < 0 ? -1
                  : take_original(imp, "create_builtin", &create_builtin_def, &orig_create_builtin,
                                  &orig_create_builtin_flags);
    pthread_mutex_unlock(&once);
    int rc = -1;
    if (a == 1 || b == 1) PyErr_SetString(PyExc_RuntimeError, "bunpy: extension loads are already guarded here");
    else if (a == 0 && b == 0) rc = guard_imp(imp, args[0], args[1], args[2]);
    Py_DECREF(imp);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}
