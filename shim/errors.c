/*
 * errors.c — error records written into the io buffer for src/errors.ts.
 */
#include "internal.h"
#include <stdarg.h>
#include <string.h>

/* A record of plain C strings: written without the Python codec so it cannot fail halfway. */
static int put_cstr(bp_io *io, uint32_t *pos, const char *s) {
    size_t n = strlen(s);
    if (n > UINT32_MAX / 2) n = UINT32_MAX / 2;
    if (bp_io_reserve(io, *pos + 5 + (uint32_t)n) != BP_OK) return -1;
    io->buf[(*pos)++] = BP_T_STR;
    uint32_t n32 = (uint32_t)n;
    memcpy(io->buf + *pos, &n32, 4);
    memcpy(io->buf + *pos + 4, s, n);
    *pos += 4 + (uint32_t)n;
    return 0;
}

static int put_i32(bp_io *io, uint32_t *pos, int32_t v) {
    if (bp_io_reserve(io, *pos + 5) != BP_OK) return -1;
    io->buf[(*pos)++] = BP_T_INT32;
    memcpy(io->buf + *pos, &v, 4);
    *pos += 4;
    return 0;
}

int32_t bp_fail_message(bp_io *io, int32_t code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    uint32_t pos = 0;
    if (put_cstr(io, &pos, msg) < 0) return BP_ERR_MEMORY;
    io->len = pos;
    return code;
}

int32_t bp_fail_writer(bp_writer *w, int status) {
    bp_writer_abort(w);
    if (status == BP_ERR_PYTHON) return bp_fail_python(w->io);
    return bp_fail_message(w->io, status, "%s", w->error[0] ? w->error : "value could not be converted");
}

/* UTF-8 of str(o), or of a fallback; the returned object (or NULL) owns the text. */
static const char *text_of(PyObject *o, PyObject **owner, const char *fallback) {
    *owner = o ? PyObject_Str(o) : NULL;
    const char *s = *owner ? PyUnicode_AsUTF8(*owner) : NULL;
    if (!s) {
        PyErr_Clear();
        return fallback;
    }
    return s;
}

static int32_t int_attr(PyObject *o, const char *name) {
    PyObject *v = PyObject_GetAttrString(o, name);
    long n = v && PyLong_Check(v) ? PyLong_AsLong(v) : -1;
    Py_XDECREF(v);
    PyErr_Clear();
    return (int32_t)n;
}

/* Record: STR type, STR module, STR message, STR traceback, INT32 lineno, INT32 offset. */
int32_t bp_fail_python(bp_io *io) {
    PyObject *exc = bp_err_take();
    if (!exc) return bp_fail_message(io, BP_ERR_PYTHON, "unknown error (no Python exception was set)");
    PyTypeObject *t = Py_TYPE(exc);
    PyObject *name_o = PyObject_GetAttrString((PyObject *)t, "__name__");
    PyObject *mod_o = PyObject_GetAttrString((PyObject *)t, "__module__");
    PyErr_Clear();
    PyObject *name_s, *mod_s, *msg_s, *tb_s = NULL;
    const char *name = text_of(name_o, &name_s, t->tp_name);
    const char *mod = text_of(mod_o, &mod_s, "builtins");
    /* A SyntaxError's str() repeats file and line; JS gets them as fields instead. */
    int syntax = PyErr_GivenExceptionMatches(exc, PyExc_SyntaxError);
    PyObject *msg_o = syntax ? PyObject_GetAttrString(exc, "msg") : Py_NewRef(exc);
    PyErr_Clear();
    const char *msg = text_of(msg_o ? msg_o : exc, &msg_s, "<exception str() failed>");

    /* A call of the main interpreter made by its own JS thread keeps the exception and
       sends it as a handle (INT53 in the traceback slot): formatting costs ~100 µs and is
       done only when JS reads the traceback (bp_format_exception). A context's record is
       read on another thread, after the call: it gets the formatted text now. */
    int lazy = bp_current_port && io == &bp_current_port->io;
    const char *tb = "";
    PyObject *tb_o = NULL;
    if (!lazy) {
        bp_interp *st = bp_interp_get();
        PyObject *fmt = st ? bp_interp_helper(st, "format_exception") : NULL;
        tb_o = fmt ? PyObject_CallOneArg(fmt, exc) : NULL;
        if (tb_o) tb = text_of(tb_o, &tb_s, "");
        PyErr_Clear();
    }

    if (lazy) {
        /* JS may keep the error for long (until it is collected): free its frames' locals
           now, as dropping the exception would (files closed, memory back); formatting
           needs only file names and line numbers. Before the record is written: a __del__
           may call into JS, which reuses the buffer. */
        bp_interp *st = bp_interp_get();
        PyObject *clear = st ? bp_interp_helper(st, "clear_frames") : NULL;
        PyObject *r = clear ? PyObject_CallOneArg(clear, exc) : NULL;
        Py_XDECREF(r);
        PyErr_Clear();
    }

    int32_t lineno = syntax ? int_attr(exc, "lineno") : -1;
    int32_t offset = syntax ? int_attr(exc, "offset") : -1;

    /* Drop the exception before writing the record (unless JS takes it): freeing it frees
       its frames' locals, and a __del__ may call into JS, which reuses the buffer. The texts
       stay alive (the type too: `name` may point into it). */
    Py_INCREF(t);
    Py_XDECREF(msg_o);
    if (!lazy) Py_DECREF(exc);

    uint32_t pos = 0;
    int bad = put_cstr(io, &pos, name) || put_cstr(io, &pos, mod) || put_cstr(io, &pos, msg);
    if (!bad && lazy) {
        bad = bp_io_reserve(io, pos + 9 + 10) != BP_OK; /* the two INT32s too: once the handle is written, nothing may fail */
        if (!bad) {
            double h = (double)(uintptr_t)exc; /* the reference goes to JS */
            io->buf[pos++] = BP_T_INT53;
            memcpy(io->buf + pos, &h, 8);
            pos += 8;
        } else {
            Py_DECREF(exc);
        }
    } else if (!bad) {
        bad = put_cstr(io, &pos, tb);
    } else if (lazy) {
        Py_DECREF(exc);
    }
    bad = bad || put_i32(io, &pos, lineno) || put_i32(io, &pos, offset);
    io->len = pos;
    Py_XDECREF(tb_o);
    Py_XDECREF(tb_s);
    Py_XDECREF(msg_s);
    Py_XDECREF(mod_s);
    Py_XDECREF(name_s);
    Py_XDECREF(mod_o);
    Py_XDECREF(name_o);
    Py_DECREF(t);
    return bad ? BP_ERR_MEMORY : BP_ERR_PYTHON;
}

/* An argument could not be made into a Python object. */
int32_t bp_fail_read(bp_io *io) {
    PyObject *exc = bp_err_take();
    PyObject *msg = exc ? PyObject_Str(exc) : NULL;
    PyTypeObject *t = exc ? (PyTypeObject *)Py_NewRef((PyObject *)Py_TYPE(exc)) : NULL;
    const char *text = msg ? PyUnicode_AsUTF8(msg) : NULL;
    PyErr_Clear();
    Py_XDECREF(exc); /* before writing: freeing it may run a __del__ that calls JS */
    int32_t rc = bp_fail_message(io, BP_ERR_ARGUMENT, "%s: %s", t ? t->tp_name : "Error", text ? text : "(no message)");
    Py_XDECREF(msg);
    Py_XDECREF(t);
    return rc;
}
