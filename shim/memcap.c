/*
 * memcap.c — memoryLimit for owngil contexts: what an interpreter allocates through
 * Python's allocators is counted, and an allocation past its limit fails, so Python raises
 * MemoryError in that context while Bun, the main interpreter and other contexts go on.
 *
 * Two hooks, installed once after Python starts, on top of the allocators in place:
 *   - the arena allocator: every interpreter's small objects live in arenas (each owngil
 *     interpreter has its own obmalloc state, so its arenas come and go on its own threads);
 *   - the raw domain: blocks larger than obmalloc serves (big strings, bytes, lists' item
 *     arrays, dict tables) fall through to PyMem_RawMalloc.
 * An allocation is charged to the interpreter of the calling thread's thread state (threads
 * a context starts are charged too); a thread without one is not counted. Raw frees learn
 * the block's size from malloc_usable_size, which is why the hook is only installed over
 * the default (libc malloc) raw allocator. Memory a C extension takes with malloc itself
 * (numpy's array data) is not seen: process contexts cap everything (RLIMIT_AS).
 *
 * Limits are kept in a small table of (interpreter, counter) entries. A counter is never
 * freed (an allocation racing the end of its interpreter may still hold it); an entry is
 * removed with bp_create_lock held, so no interpreter can be created at the same address
 * before the entry is gone. Threads cache their lookup, checked against a generation.
 */
#include "internal.h"
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct bp_memcap {
    atomic_size_t used;
    size_t limit;
} bp_memcap;

#define BP_MAX_CAPS 256

static struct {
    PyInterpreterState *interp;
    bp_memcap *cap;
} caps[BP_MAX_CAPS];
static pthread_mutex_t caps_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int caps_count;      /* entries in use: 0 keeps every allocation on the fast path */
static atomic_uint caps_gen;       /* bumped when an entry goes: thread caches look again */
static int installed;              /* the hooks are in place (memoryLimit can be honoured) */

static PyMemAllocatorEx raw_orig;
static PyObjectArenaAllocator arena_orig;

static _Thread_local PyInterpreterState *tl_interp;
static _Thread_local bp_memcap *tl_cap;
static _Thread_local unsigned tl_gen = ~0u;

#if PY_VERSION_HEX >= 0x030D0000
#define current_tstate() PyThreadState_GetUnchecked()
#else
#define current_tstate() _PyThreadState_UncheckedGet()
#endif

/* The counter of the calling thread's interpreter, or NULL. No lock on the common path. */
static bp_memcap *current_cap(void) {
    if (atomic_load_explicit(&caps_count, memory_order_relaxed) == 0) return NULL;
    PyThreadState *ts = current_tstate();
    if (!ts) return NULL;
    PyInterpreterState *interp = ts->interp;
    unsigned gen = atomic_load_explicit(&caps_gen, memory_order_acquire);
    if (interp == tl_interp && gen == tl_gen) return tl_cap;
    bp_memcap *found = NULL;
    pthread_mutex_lock(&caps_lock);
    for (int i = 0; i < BP_MAX_CAPS; i++)
        if (caps[i].interp == interp) {
            found = caps[i].cap;
            break;
        }
    pthread_mutex_unlock(&caps_lock);
    tl_interp = interp;
    tl_cap = found;
    tl_gen = gen;
    return found;
}

/* Charges n bytes; 0 when that would pass the limit (nothing charged then). */
static int charge(bp_memcap *cap, size_t n) {
    size_t used = atomic_load_explicit(&cap->used, memory_order_relaxed);
    do {
        if (used + n > cap->limit || used + n < used) return 0;
    } while (!atomic_compare_exchange_weak_explicit(&cap->used, &used, used + n, memory_order_relaxed,
                                                    memory_order_relaxed));
    return 1;
}

static void refund(bp_memcap *cap, size_t n) {
    size_t used = atomic_load_explicit(&cap->used, memory_order_relaxed);
    size_t next;
    do next = used > n ? used - n : 0; /* never below zero (a block counted elsewhere) */
    while (!atomic_compare_exchange_weak_explicit(&cap->used, &used, next, memory_order_relaxed,
                                                  memory_order_relaxed));
}

/* ---- the raw domain ---------------------------------------------------------------- */

static void *raw_malloc(void *ctx, size_t n) {
    (void)ctx;
    bp_memcap *cap = current_cap();
    if (cap && !charge(cap, n)) return NULL;
    void *p = raw_orig.malloc(raw_orig.ctx, n);
    if (cap) {
        if (!p) refund(cap, n);
        else if (malloc_usable_size(p) > n) charge(cap, malloc_usable_size(p) - n); /* may pass it a little */
    }
    return p;
}

static void *raw_calloc(void *ctx, size_t nelem, size_t elsize) {
    (void)ctx;
    bp_memcap *cap = current_cap();
    size_t n = nelem * elsize;
    if (cap && elsize && n / elsize != nelem) return NULL;
    if (cap && !charge(cap, n)) return NULL;
    void *p = raw_orig.calloc(raw_orig.ctx, nelem, elsize);
    if (cap) {
        if (!p) refund(cap, n);
        else if (malloc_usable_size(p) > n) charge(cap, malloc_usable_size(p) - n);
    }
    return p;
}

static void *raw_realloc(void *ctx, void *old, size_t n) {
    (void)ctx;
    bp_memcap *cap = current_cap();
    if (!cap) return raw_orig.realloc(raw_orig.ctx, old, n);
    size_t before = old ? malloc_usable_size(old) : 0;
    if (n > before && !charge(cap, n - before)) return NULL;
    void *p = raw_orig.realloc(raw_orig.ctx, old, n);
    if (!p) {
        if (n > before) refund(cap, n - before);
        return NULL;
    }
    size_t after = malloc_usable_size(p);
    size_t charged = n > before ? n : before; /* what the counter now holds for this block */
    if (after > charged) charge(cap, after - charged);
    else if (after < charged) refund(cap, charged - after);
    return p;
}

static void raw_free(void *ctx, void *p) {
    (void)ctx;
    if (p) {
        bp_memcap *cap = current_cap();
        if (cap) refund(cap, malloc_usable_size(p));
    }
    raw_orig.free(raw_orig.ctx, p);
}

/* ---- arenas ------------------------------------------------------------------------- */

static void *arena_alloc(void *ctx, size_t n) {
    (void)ctx;
    bp_memcap *cap = current_cap();
    if (cap && !charge(cap, n)) return NULL;
    void *p = arena_orig.alloc(arena_orig.ctx, n);
    if (cap && !p) refund(cap, n);
    return p;
}

static void arena_free(void *ctx, void *p, size_t n) {
    (void)ctx;
    bp_memcap *cap = current_cap();
    if (cap && p) refund(cap, n);
    arena_orig.free(arena_orig.ctx, p, n);
}

/* ---- setup ------------------------------------------------------------------------- */

/* Once, after Python started, with no other thread in Python yet. Not installed when the
   raw allocator is not libc's malloc (PYTHONMALLOC=debug, -X dev): sizes would be unknown. */
void bp_memcap_install(void) {
    const char *env = getenv("PYTHONMALLOC");
    if (env && *env && strcmp(env, "malloc") != 0 && strcmp(env, "pymalloc") != 0) return;
    PyObject *flags = PySys_GetObject("flags"); /* borrowed */
    PyObject *dev = flags ? PyObject_GetAttrString(flags, "dev_mode") : NULL;
    int dev_mode = dev == Py_True;
    Py_XDECREF(dev);
    PyErr_Clear();
    if (dev_mode) return;
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &raw_orig);
    PyMemAllocatorEx raw = {.ctx = NULL, .malloc = raw_malloc, .calloc = raw_calloc, .realloc = raw_realloc, .free = raw_free};
    PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &raw);
    PyObject_GetArenaAllocator(&arena_orig);
    PyObjectArenaAllocator arena = {.ctx = NULL, .alloc = arena_alloc, .free = arena_free};
    PyObject_SetArenaAllocator(&arena);
    installed = 1;
}

int bp_memcap_available(void) { return installed; }

/* The calling thread's interpreter gets a limit of `limit` bytes, counting from now.
   -1 (RuntimeError set) when the table is full or the hooks are not installed. */
int bp_memcap_register(size_t limit) {
    if (!installed) {
        PyErr_SetString(PyExc_RuntimeError,
                        "bunpy: memoryLimit cannot be counted here: Python runs with another memory allocator "
                        "(PYTHONMALLOC or -X dev); use a process context");
        return -1;
    }
    PyInterpreterState *interp = PyInterpreterState_Get();
    bp_memcap *cap = calloc(1, sizeof *cap); /* never freed: see the top of the file */
    if (!cap) {
        PyErr_NoMemory();
        return -1;
    }
    cap->limit = limit;
    int placed = 0;
    pthread_mutex_lock(&caps_lock);
    for (int i = 0; i < BP_MAX_CAPS && !placed; i++)
        if (!caps[i].interp) {
            caps[i].interp = interp;
            caps[i].cap = cap;
            placed = 1;
        }
    pthread_mutex_unlock(&caps_lock);
    if (!placed) {
        free(cap);
        PyErr_Format(PyExc_RuntimeError, "bunpy: more than %d contexts with a memoryLimit at once", BP_MAX_CAPS);
        return -1;
    }
    atomic_fetch_add(&caps_count, 1);
    atomic_fetch_add_explicit(&caps_gen, 1, memory_order_release);
    return 0;
}

/* The interpreter ended (bp_create_lock held): its entry goes. */
void bp_memcap_forget(PyInterpreterState *interp) {
    int found = 0;
    pthread_mutex_lock(&caps_lock);
    for (int i = 0; i < BP_MAX_CAPS; i++)
        if (caps[i].interp == interp) {
            caps[i].interp = NULL;
            caps[i].cap = NULL;
            found = 1;
        }
    pthread_mutex_unlock(&caps_lock);
    if (found) {
        atomic_fetch_add_explicit(&caps_gen, 1, memory_order_release);
        atomic_fetch_sub(&caps_count, 1);
    }
}

/* Bytes counted for the calling thread's interpreter, or -1 without a limit (tests). */
long long bp_memcap_used(void) {
    bp_memcap *cap = current_cap();
    return cap ? (long long)atomic_load(&cap->used) : -1;
}
