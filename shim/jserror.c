/*
 * jserror.c — bunpy.JSError, the exception a JS throw becomes in Python.
 *
 * A heap type per interpreter (module state), subclass of Exception, with its attributes
 * in C slots: js_name, js_message, and js_stack. Raising one costs little more than a
 * Python `raise` (no instance dict, no attribute lookups, no call of the type).
 *
 * The lazy stack: formatting a JS error's stack costs Bun 2-5 us, more than the rest of
 * the throw, and most handlers never read it. For the main interpreter's own callbacks JS
 * keeps the thrown Error in a slot of a table and sends only the slot number; the JSError
 * keeps (port, slot). The first read of js_stack asks JS for the text of that slot (a call
 * on the JS thread, like calling a JS function) and keeps it; the slot goes back to JS
 * through the port's released list (as -1 - slot) then, or when the exception is freed.
 */
#include "internal.h"
#include <stddef.h>
#include <string.h>

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

typedef struct {
    PyBaseExceptionObject base;
    PyObject *js_name;    /* str, or NULL (a JSError made by Python code) */
    PyObject *js_message;
    PyObject *js_stack;   /* the text once known; NULL while it is still in JS (or none) */
    bp_port *port;        /* with slot >= 0: the JS thread whose table holds the Error */
    int32_t slot;         /* -1: no JS error is held for this exception */
} bp_jserror;

static PyTypeObject *exception_base(void) { return (PyTypeObject *)PyExc_Exception; }

/* Hands the slot back to JS (any thread, GIL held) and drops the port. */
static void give_back_slot(bp_jserror *e) {
    bp_port *p = e->port;
    int32_t slot = e->slot;
    e->port = NULL;
    e->slot = -1;
    if (!p) return;
    if (slot >= 0 && bp_port_alive(p)) bp_port_release_id(p, -1 - slot);
    bp_port_unref(p);
}

/* "name: message", the exception's argument (PyUnicode_FromFormat costs ~100 ns more). */
static PyObject *error_text(PyObject *name, PyObject *message) {
    if (!PyUnicode_Check(name) || !PyUnicode_Check(message))
        return PyUnicode_FromFormat("%S: %S", name, message);
    Py_ssize_t n1 = PyUnicode_GET_LENGTH(name), n2 = PyUnicode_GET_LENGTH(message);
    Py_UCS4 max = PyUnicode_MAX_CHAR_VALUE(name), max2 = PyUnicode_MAX_CHAR_VALUE(message);
    if (max2 > max) max = max2;
    PyObject *text = PyUnicode_New(n1 + 2 + n2, max);
    if (!text) return NULL;
    if (PyUnicode_CopyCharacters(text, 0, name, 0, n1) < 0 ||
        PyUnicode_WriteChar(text, n1, ':') < 0 || PyUnicode_WriteChar(text, n1 + 1, ' ') < 0 ||
        PyUnicode_CopyCharacters(text, n1 + 2, message, 0, n2) < 0) {
        Py_DECREF(text);
        return NULL;
    }
    return text;
}

/* Raises bunpy.JSError from an error record: STR name, STR message, then the stack, a STR
   or (main interpreter, this port's callbacks) INT32 slot of the Error in JS's table. */
PyObject *bp_raise_js_error(bp_interp *st, bp_reader *r) {
    PyObject *name = bp_read_value(r, 0);
    PyObject *message = name ? bp_read_value(r, 0) : NULL;
    PyObject *stack = NULL;
    int32_t slot = -1;
    if (message) {
        if (r->pos < r->end && r->buf[r->pos] == BP_T_INT32 && r->end - r->pos >= 5) {
            memcpy(&slot, r->buf + r->pos + 1, 4);
            r->pos += 5;
            if (!r->port) slot = -1; /* only a port's own table can be asked */
        } else {
            stack = bp_read_value(r, 0);
        }
    }
    if (!message || (slot < 0 && !stack)) {
        if (slot >= 0 && r->port && bp_port_alive(r->port)) bp_port_release_id(r->port, -1 - slot);
        Py_XDECREF(name);
        Py_XDECREF(message);
        return NULL;
    }
    /* The same error thrown again (a prebuilt Error, or the same name and message, which
       the string memo hands back as the same strs): its args tuple is reused, a tuple being
       immutable; else made and kept for the next one. */
    PyObject *args = NULL;
    if (name == st->jserror_last[0] && message == st->jserror_last[1]) {
        args = Py_NewRef(st->jserror_last[2]);
    } else {
        PyObject *text = error_text(name, message);
        args = text ? PyTuple_New(1) : NULL;
        if (args) {
            PyTuple_SET_ITEM(args, 0, text);
            Py_XSETREF(st->jserror_last[0], Py_NewRef(name));
            Py_XSETREF(st->jserror_last[1], Py_NewRef(message));
            Py_XSETREF(st->jserror_last[2], Py_NewRef(args));
        } else {
            Py_XDECREF(text);
        }
    }
    /* tp_new of BaseException takes the args as they are: its tp_init would only set them again */
    bp_jserror *e = args ? (bp_jserror *)exception_base()->tp_new((PyTypeObject *)st->jserror_type, args, NULL) : NULL;
    Py_XDECREF(args);
    if (!e) {
        if (slot >= 0 && bp_port_alive(r->port)) bp_port_release_id(r->port, -1 - slot);
        Py_DECREF(name);
        Py_DECREF(message);
        Py_XDECREF(stack);
        return NULL;
    }
    e->js_name = name;
    e->js_message = message;
    e->js_stack = stack;
    e->slot = -1; /* BaseException's tp_new zeroed it: 0 would name a slot */
    if (slot >= 0) {
        e->port = r->port;
        e->slot = slot;
        atomic_fetch_add(&r->port->refs, 1);
    }
    bp_err_give((PyObject *)e);
    return NULL;
}

/* ---- the type ------------------------------------------------------------------------- */

static PyObject *jserror_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    bp_jserror *e = (bp_jserror *)exception_base()->tp_new(type, args, kwds);
    if (e) e->slot = -1;
    return (PyObject *)e;
}

/* js_stack: the kept text, asked from JS first if JS still holds the Error. */
static PyObject *jserror_get_stack(PyObject *self, void *unused) {
    (void)unused;
    bp_jserror *e = (bp_jserror *)self;
    if (e->js_stack) return Py_NewRef(e->js_stack);
    if (e->slot < 0 || !e->port) return PyUnicode_FromStringAndSize(NULL, 0);
    bp_interp *st = bp_interp_get();
    if (!st) {
        PyErr_SetString(PyExc_RuntimeError, "bunpy: the _bunpy module is not loaded in this interpreter");
        return NULL;
    }
    /* a call into JS: from a Python thread this raises RuntimeError, which says so */
    PyObject *text = bp_call_js_target(st, e->port, -2 - e->slot);
    if (!text) return NULL;
    if (!PyUnicode_Check(text)) {
        Py_DECREF(text);
        PyErr_SetString(PyExc_TypeError, "bunpy: the JS stack was not a string");
        return NULL;
    }
    if (e->js_stack) { /* read meanwhile (JS called back into Python): keep the first */
        Py_DECREF(text);
        return Py_NewRef(e->js_stack);
    }
    e->js_stack = text;
    give_back_slot(e);
    return Py_NewRef(text);
}

static int jserror_set_stack(PyObject *self, PyObject *value, void *unused) {
    (void)unused;
    if (value && !PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "JSError.js_stack must be a str");
        return -1;
    }
    bp_jserror *e = (bp_jserror *)self;
    Py_XSETREF(e->js_stack, Py_XNewRef(value));
    give_back_slot(e);
    return 0;
}

static int jserror_traverse(PyObject *self, visitproc visit, void *arg) {
    bp_jserror *e = (bp_jserror *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(e->js_name);
    Py_VISIT(e->js_message);
    Py_VISIT(e->js_stack);
    return exception_base()->tp_traverse(self, visit, arg);
}

static int jserror_clear(PyObject *self) {
    bp_jserror *e = (bp_jserror *)self;
    Py_CLEAR(e->js_name);
    Py_CLEAR(e->js_message);
    Py_CLEAR(e->js_stack);
    return exception_base()->tp_clear(self);
}

static void jserror_dealloc(PyObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    bp_jserror *e = (bp_jserror *)self;
    PyObject_GC_UnTrack(self);
    /* The trashcan, as BaseException's own dealloc has (its check skips it for our type):
       freeing a chain of 100,000 JSErrors linked by __context__ / __cause__ recursed once
       per link and overflowed the C stack (SIGSEGV). */
    Py_TRASHCAN_BEGIN(self, jserror_dealloc)
    give_back_slot(e);
    Py_CLEAR(e->js_name);
    Py_CLEAR(e->js_message);
    Py_CLEAR(e->js_stack);
    exception_base()->tp_dealloc(self); /* BaseException's: its fields, then tp_free */
    Py_DECREF(tp);
    Py_TRASHCAN_END
}

/* Pickling and copy: (type, args, state) with the three attributes in the state, the stack
   as text (formatted now if it can be; left out if JS cannot be asked from here). */
static PyObject *jserror_reduce(PyObject *self, PyObject *unused) {
    (void)unused;
    bp_jserror *e = (bp_jserror *)self;
    PyObject *state = e->base.dict ? PyDict_Copy(e->base.dict) : PyDict_New();
    if (!state) return NULL;
    if ((e->js_name && PyDict_SetItemString(state, "js_name", e->js_name) < 0) ||
        (e->js_message && PyDict_SetItemString(state, "js_message", e->js_message) < 0)) {
        Py_DECREF(state);
        return NULL;
    }
    if (e->js_stack || e->slot >= 0) {
        PyObject *stack = jserror_get_stack(self, NULL);
        if (!stack) PyErr_Clear();
        int bad = stack && PyDict_SetItemString(state, "js_stack", stack) < 0;
        Py_XDECREF(stack);
        if (bad) {
            Py_DECREF(state);
            return NULL;
        }
    }
    PyObject *args = e->base.args ? e->base.args : Py_None;
    return Py_BuildValue("(OON)", (PyObject *)Py_TYPE(self), args, state);
}

static PyObject *jserror_setstate(PyObject *self, PyObject *state) {
    if (state == Py_None) Py_RETURN_NONE;
    if (!PyDict_Check(state)) {
        PyErr_SetString(PyExc_TypeError, "JSError state is not a dict");
        return NULL;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(state, &pos, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        /* "_js_stack": what a JSError pickled by an earlier bunpy kept the text in */
        int old = PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, "_js_stack") == 0;
        int rc = old ? (PyUnicode_Check(value) ? jserror_set_stack(self, value, NULL) : 0)
                     : PyObject_SetAttr(self, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc < 0) return NULL;
    }
    Py_RETURN_NONE;
}

static PyMemberDef jserror_members[] = {
    {"js_name", Py_T_OBJECT_EX, offsetof(bp_jserror, js_name), 0, "the JS error's name, such as \"TypeError\""},
    {"js_message", Py_T_OBJECT_EX, offsetof(bp_jserror, js_message), 0, "the JS error's message"},
    {NULL},
};

static PyGetSetDef jserror_getset[] = {
    {"js_stack", jserror_get_stack, jserror_set_stack, "the JS error's stack, as JS formats it", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef jserror_methods[] = {
    {"__reduce__", jserror_reduce, METH_NOARGS, NULL},
    {"__setstate__", jserror_setstate, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot jserror_slots[] = {
    {Py_tp_new, jserror_new},
    {Py_tp_dealloc, jserror_dealloc},
    {Py_tp_traverse, jserror_traverse},
    {Py_tp_clear, jserror_clear},
    {Py_tp_members, jserror_members},
    {Py_tp_getset, jserror_getset},
    {Py_tp_methods, jserror_methods},
    {Py_tp_doc, "An exception thrown by a JavaScript function."},
    {0, NULL},
};

static PyType_Spec jserror_spec = {
    .name = "bunpy.JSError",
    .basicsize = sizeof(bp_jserror),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = jserror_slots,
};

/* Makes this interpreter's bunpy.JSError and adds it to the module. */
int bp_jserror_init(PyObject *m, bp_interp *st) {
    st->jserror_type = PyType_FromModuleAndSpec(m, &jserror_spec, PyExc_Exception);
    if (!st->jserror_type) return -1;
    return PyModule_AddObjectRef(m, "JSError", st->jserror_type);
}
