/*
 * methods.c — what lets JS answer `proxy.method` without asking Python again.
 *
 * bp_getattr answers "a method bound to obj" (BP_T_METHOD). When that answer can only
 * change in ways JS sees by reading memory, it adds what JS checks before reusing it:
 *
 *   - the object's type (ob_type: `obj.__class__ = X` changes it) and that type's
 *     tp_version_tag, which CPython sets to 0 whenever the type or any base is modified
 *     (attribute set or deleted, __bases__, slots) and later replaces with a fresh,
 *     never reused value;
 *   - for objects with an instance dict (3.12+ only): the address of the object's dict
 *     pointer and its value (a dict created or replaced changes it; the record holds a
 *     reference to the dict, so a replaced one cannot be freed and its address reused),
 *     and a generation counter a dict watcher bumps when a watched dict gains a key or is
 *     cloned into: the ways an instance attribute can come to shadow the method.
 *
 * Only where the lookup is the generic one (tp_getattro == PyObject_GenericGetAttr: no
 * __getattribute__ / __getattr__ on the class), the attribute comes from the type as a plain
 * function or a method descriptor (non-data descriptors: list.append, def), and the instance
 * dict does not hold the name. 3.11 has no dict watchers: objects with a dict stay uncached.
 *
 * The type and the dict are handed to JS as new references (handles JS drops with the
 * proxy or when the record is found stale), so reading the type's version tag from JS
 * never touches freed memory.
 */
#include "internal.h"
#include <stddef.h>
#include <string.h>

/* Bumped (GIL held, main interpreter) by the dict watcher; JS reads it without the GIL
   through an Int32Array. Process-wide: only the main interpreter registers the watcher,
   so no context interpreter ever touches it. */
static _Atomic int32_t method_gen;

#if PY_VERSION_HEX >= 0x030C0000
/* The main interpreter's watcher id (-1: not registered yet, -2: none available). */
static int method_watcher = -1;

static int shadow_watch(PyDict_WatchEvent event, PyObject *dict, PyObject *key, PyObject *value) {
    (void)dict; (void)key; (void)value;
    if (event == PyDict_EVENT_ADDED || event == PyDict_EVENT_CLONED)
        atomic_fetch_add_explicit(&method_gen, 1, memory_order_release);
    return 0;
}

static int watcher_id(void) {
    if (method_watcher == -1) {
        if (PyInterpreterState_Get() != PyInterpreterState_Main()) return -1;
        method_watcher = PyDict_AddWatcher(shadow_watch);
        if (method_watcher < 0) {
            PyErr_Clear();
            method_watcher = -2;
        }
    }
    return method_watcher;
}
#endif

#if PY_VERSION_HEX >= 0x030C0000
/*
 * A split-table instance dict (keys shared with the class, values possibly inline in the
 * object) does not report every change to watchers: 3.12 reports a deleted attribute set
 * again as MODIFIED, and 3.13.0 reports nothing for attributes stored into inline values
 * while a dict exists. A combined table reports each added key as ADDED. Adding and removing
 * a key that is not a str turns a split table into a combined one, as `vars(obj)[0] = 0;
 * del vars(obj)[0]` would: the same dict object, same items, same order; the instance's
 * attribute reads then take the dict path instead of the inline-values one.
 */
static int combine(PyObject *d) {
    if (PyDict_SetItem(d, Py_None, Py_None) < 0 || PyDict_DelItem(d, Py_None) < 0) {
        PyErr_Clear();
        return -1;
    }
    return ((PyDictObject *)d)->ma_values ? -1 : 0;
}
#endif

/* Layout of the cache record after the BP_T_METHOD tag (see bunpy.h). */
#define REC_TYPE 8
#define REC_DICTADDR 16
#define REC_DICT 24
#define REC_TAG 32
#define REC_GEN 36
#define REC_LEN 40

/* Called by bp_getattr (GIL held) once getattr(obj, name) gave a method bound to obj:
   writes the METHOD answer, with the cache record when JS may reuse it. */
void bp_method_answer(bp_io *io, PyObject *obj, PyObject *name) {
    io->buf[0] = BP_T_METHOD;
    io->buf[1] = 0;
    io->len = 1;
    PyTypeObject *t = Py_TYPE(obj);
    if (t->tp_getattro != PyObject_GenericGetAttr || !PyUnicode_CheckExact(name)) return;
    PyObject *descr = _PyType_Lookup(t, name); /* borrowed; assigns the version tag */
    if (!descr || (Py_TYPE(descr) != &PyFunction_Type && Py_TYPE(descr) != &PyMethodDescr_Type)) return;
#if PY_VERSION_HEX < 0x030C0000
    if (!(t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)) return;
#endif
    uint32_t tag = t->tp_version_tag;
    if (tag == 0) return;
    /* Our own references to the type and the dict, handed to JS with the record: the dict
       check below can run Python code (the __eq__ of a str subclass key with the name's
       hash) that replaces the dict, assigns obj.__class__ or modifies the class, freeing
       what a borrowed pointer would still point at. */
    Py_INCREF(t);
    PyObject *d = NULL;
    uint64_t dictaddr = 0;
    if (t->tp_dictoffset != 0 || (t->tp_flags & Py_TPFLAGS_MANAGED_DICT)) {
#if PY_VERSION_HEX >= 0x030C0000
        int wid = watcher_id();
        if (wid < 0) goto none;
        PyObject **dp = _PyObject_GetDictPtr(obj); /* materialises an inline-values dict */
        if (!dp) {
            PyErr_Clear();
            goto none;
        }
        d = Py_XNewRef(*dp);
        if (d) {
            if (!PyDict_CheckExact(d)) goto none;
            int has = PyDict_Contains(d, name); /* may run Python code (see above) */
            if (has != 0) {
                if (has < 0) PyErr_Clear();
                goto none;
            }
            /* what that code may have changed: the answer stands, but no record */
            if (Py_TYPE(obj) != t || t->tp_version_tag != tag || *dp != d) goto none;
            if (((PyDictObject *)d)->ma_values && combine(d) < 0) goto none;
            if (PyDict_Watch(wid, d) < 0) {
                PyErr_Clear();
                goto none;
            }
        }
        dictaddr = (uint64_t)(uintptr_t)dp;
#else
        goto none; /* no dict watchers before 3.12 */
#endif
    }
    if (bp_io_grow(io, REC_LEN) < 0) {
        PyErr_Clear();
        goto none;
    }
    uint64_t type = (uint64_t)(uintptr_t)t;    /* JS drops it */
    uint64_t dictval = (uint64_t)(uintptr_t)d; /* JS drops it too (0: no dict) */
    int32_t gen = atomic_load_explicit(&method_gen, memory_order_acquire);
    io->buf[1] = 1;
    memcpy(io->buf + REC_TYPE, &type, 8);
    memcpy(io->buf + REC_DICTADDR, &dictaddr, 8);
    memcpy(io->buf + REC_DICT, &dictval, 8);
    memcpy(io->buf + REC_TAG, &tag, 4);
    memcpy(io->buf + REC_GEN, &gen, 4);
    io->len = REC_LEN;
    return;
none:
    Py_XDECREF(d);
    Py_DECREF(t);
}

void *bp_method_gen(void) { return (void *)&method_gen; }

int32_t bp_method_layout(void) {
    return (int32_t)(offsetof(PyObject, ob_type) | (offsetof(PyTypeObject, tp_version_tag) << 16));
}
