/*
 * transmit.c — the write half of _bunpy.StreamCore (transport.c has the rest): write(),
 * writelines(), the write queue, the water marks and flushing.
 *
 * Gathered writes: a small write() on a transport that can take it does not go to the
 * kernel at once. It is appended to the transport's queue, and the transport joins the
 * reactor's pending list; at the end of the loop iteration (bp_transports_run, after the
 * ready handles and the reads) each such transport sends what it gathered with one send(),
 * so the two or three writes a protocol makes per message (a response's head and body)
 * cost one syscall. A transport written to from its own data_received flushes right after
 * its reads. Outside an iteration the pending list makes the next wait a poll, so gathered
 * bytes never wait for a sleep.
 *
 * What asyncio users see stays as with an immediate send: gathered bytes are not counted
 * by get_write_buffer_size() (the kernel would have taken them) and never pause the
 * protocol; a write that would take the gathered bytes past the high water mark (or past
 * GATHER_MAX) is sent at once, together with them (one sendmsg), and what the kernel does
 * not take is queued, counted and paused for as before. close(), write_eof() and abort()
 * send what was gathered first (_flush), so their ordering is that of immediate writes.
 */
#include "reactor.h"
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define GATHER_MAX (64 * 1024) /* bigger writes go out at once */

static size_t queued(bp_transport *t) { return t->wlen - t->wpos; }

/* what get_write_buffer_size() reports: bytes the kernel refused, not gathered ones */
static size_t backlog(bp_transport *t) { return t->gathered ? 0 : queued(t); }

/* Sends from the queue until it is empty or the socket is full. 0, or -1 with errno. */
static int flush(bp_transport *t) {
    t->gathered = 0; /* from here on, what is left is the kernel's refusal */
    while (t->wlen > t->wpos) {
        ssize_t n = send(t->fd, t->wbuf + t->wpos, t->wlen - t->wpos, MSG_NOSIGNAL);
        if (n >= 0) {
            t->wpos += (size_t)n;
            continue;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            t->writable = 0;
            return 0;
        }
        return -1;
    }
    t->wlen = t->wpos = 0;
    if (t->wcap > (1u << 20)) { /* a burst made it big: do not keep it for the connection's life */
        PyMem_Free(t->wbuf);
        t->wbuf = NULL;
        t->wcap = 0;
    }
    return 0;
}

static int protocol_call(bp_transport *t, const char *method) {
    PyObject *v = PyObject_CallMethod(t->protocol, method, NULL);
    if (v) {
        Py_DECREF(v);
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_SystemExit) || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) return -1;
    PyObject *exc = bp_err_take();
    char msg[64];
    snprintf(msg, sizeof msg, "protocol.%s() failed", method);
    v = bp_transport_cold(t, BP_COLD_PROTOCOL_CALL_FAILED, exc, msg);
    Py_DECREF(exc);
    Py_XDECREF(v);
    return v ? 0 : -1;
}

static int maybe_resume_protocol(bp_transport *t) {
    if (!t->protocol_paused || backlog(t) > t->low) return 0;
    t->protocol_paused = 0;
    return protocol_call(t, "resume_writing");
}

static int maybe_pause_protocol(bp_transport *t) {
    if (t->protocol_paused || backlog(t) <= t->high) return 0;
    t->protocol_paused = 1;
    return protocol_call(t, "pause_writing");
}

/* Sends the queue (on an EPOLLOUT edge, or what was gathered): 0, or -1 with an exception
   that must go up (SystemExit, KeyboardInterrupt). */
int bp_transport_on_writable(bp_transport *t) {
    if (t->wlen == t->wpos) {
        t->gathered = 0;
        return 0;
    }
    if (flush(t) < 0) {
        t->wlen = t->wpos = 0;
        return bp_transport_fatal_errno(t, errno, "Fatal write error on socket transport");
    }
    if (maybe_resume_protocol(t) < 0) return -1;
    if (t->wlen == t->wpos && (t->closing || t->eof_requested)) { /* close or write_eof waited for this */
        PyObject *v = bp_transport_cold(t, BP_COLD_WRITE_DRAINED, NULL, NULL);
        Py_XDECREF(v);
        if (!v) return -1;
    }
    return 0;
}

/* Appends bytes to the queue. */
static int enqueue(bp_transport *t, const char *p, size_t n) {
    if (t->wpos && t->wpos == t->wlen) t->wlen = t->wpos = 0;
    if (t->wlen + n > t->wcap) {
        if (t->wpos) { /* compact first */
            memmove(t->wbuf, t->wbuf + t->wpos, t->wlen - t->wpos);
            t->wlen -= t->wpos;
            t->wpos = 0;
        }
        if (t->wlen + n > t->wcap) {
            size_t cap = t->wcap ? t->wcap : 16 * 1024;
            while (cap < t->wlen + n) cap *= 2;
            char *b = PyMem_Realloc(t->wbuf, cap);
            if (!b) {
                PyErr_NoMemory();
                return -1;
            }
            t->wbuf = b;
            t->wcap = cap;
        }
    }
    memcpy(t->wbuf + t->wlen, p, n);
    t->wlen += n;
    return 0;
}

/* Sends the gathered bytes and iov now, as far as the socket takes them (one sendmsg);
   queues the rest. 0, or -1 with an error set. */
static int send_now(bp_transport *t, struct iovec *iov, int niov, size_t total) {
    size_t pending = queued(t), sent = 0;
    struct iovec stack[8], *all = stack;
    int nall = niov + (pending ? 1 : 0);
    if (nall > 8 && !(all = PyMem_Malloc((size_t)nall * sizeof *all))) {
        PyErr_NoMemory();
        return -1;
    }
    int k = 0;
    if (pending) all[k++] = (struct iovec){.iov_base = t->wbuf + t->wpos, .iov_len = pending};
    memcpy(all + k, iov, (size_t)niov * sizeof *iov);
    t->gathered = 0;
    for (;;) {
        struct msghdr mh = {.msg_iov = all, .msg_iovlen = (size_t)nall};
        ssize_t n = nall == 1 ? send(t->fd, all[0].iov_base, all[0].iov_len, MSG_NOSIGNAL) : sendmsg(t->fd, &mh, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            t->writable = 0;
            break;
        }
        if (all != stack) PyMem_Free(all);
        if (n < 0) {
            t->wlen = t->wpos = 0;
            return bp_transport_fatal_errno(t, errno, "Fatal write error on socket transport");
        }
        sent = (size_t)n;
        break;
    }
    if (all != stack) PyMem_Free(all);
    size_t from_queue = sent < pending ? sent : pending;
    t->wpos += from_queue;
    if (t->wpos == t->wlen) t->wlen = t->wpos = 0;
    size_t skip = sent - from_queue;
    if (skip == total) return 0;
    for (int i = 0; i < niov; i++) { /* queue what is left */
        size_t len = iov[i].iov_len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        if (enqueue(t, (const char *)iov[i].iov_base + skip, len - skip) < 0) return -1;
        skip = 0;
    }
    return 0;
}

/* write()/writelines() of total bytes in iov: gathered, sent now, or queued behind what the
   kernel refused. */
static PyObject *transmit(bp_transport *t, struct iovec *iov, int niov, size_t total) {
    int rc = 0;
    if (!t->registered || (queued(t) && !t->gathered)) { /* not started, or a backlog */
        for (int i = 0; i < niov && rc == 0; i++) rc = enqueue(t, iov[i].iov_base, iov[i].iov_len);
    } else if (queued(t) + total <= GATHER_MAX && queued(t) + total <= t->high) {
        for (int i = 0; i < niov && rc == 0; i++) rc = enqueue(t, iov[i].iov_base, iov[i].iov_len);
        t->gathered = 1;
        t->writable = 1; /* not refused yet: the flush tries */
        if (!t->serving) bp_transport_pend((bp_reactor *)t->reactor, t); /* else serve() flushes */
    } else {
        rc = send_now(t, iov, niov, total);
        if (rc == 0) bp_transport_arm(t); /* a backlog formed (level mode: EPOLLOUT wanted) */
    }
    if (rc < 0 || maybe_pause_protocol(t) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *eof_then_write_error(void) {
    PyErr_SetString(PyExc_RuntimeError, "Cannot call write() after write_eof()");
    return NULL;
}

static int closed_write(bp_transport *t) {
    if (t->conn_lost) { /* as asyncio: writes after the connection is lost are dropped */
        t->conn_lost++;
        return 1;
    }
    return 0;
}

PyObject *bp_core_write(PyObject *self, PyObject *data) {
    bp_transport *t = (bp_transport *)self;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "data argument must be a bytes-like object, not '%.100s'", Py_TYPE(data)->tp_name);
        return NULL;
    }
    PyObject *v;
    if (t->eof_requested) v = eof_then_write_error();
    else if (view.len == 0 || closed_write(t)) v = Py_NewRef(Py_None);
    else {
        struct iovec iov = {.iov_base = view.buf, .iov_len = (size_t)view.len};
        v = transmit(t, &iov, 1, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return v;
}

/* writelines(list_of_data): one gathered send for all of it. */
PyObject *bp_core_writelines(PyObject *self, PyObject *lines) {
    bp_transport *t = (bp_transport *)self;
    if (t->eof_requested) return eof_then_write_error();
    PyObject *seq = PySequence_Fast(lines, "writelines() argument must be an iterable of bytes-like objects");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *v = NULL;
    if (n > IOV_MAX - 1) { /* long lists: one write per item */
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *r = bp_core_write(self, PySequence_Fast_GET_ITEM(seq, i));
            if (!r) goto done;
            Py_DECREF(r);
        }
        v = Py_NewRef(Py_None);
        goto done;
    }
    Py_buffer *views = PyMem_Calloc((size_t)n + 1, sizeof *views);
    struct iovec *iov = PyMem_Calloc((size_t)n + 1, sizeof *iov);
    Py_ssize_t got = 0;
    size_t total = 0;
    if (!views || !iov) {
        PyErr_NoMemory();
        goto out;
    }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE) < 0) goto out;
        iov[got].iov_base = views[got].buf;
        iov[got].iov_len = (size_t)views[got].len;
        total += (size_t)views[got].len;
    }
    if (total == 0 || closed_write(t)) v = Py_NewRef(Py_None);
    else v = transmit(t, iov, (int)n, total);
out:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(iov);
done:
    Py_DECREF(seq);
    return v;
}

/* _flush(): sends what was gathered now (close, write_eof and abort call it first). */
PyObject *bp_core_flush(PyObject *self, PyObject *unused) {
    bp_transport *t = (bp_transport *)self;
    if (t->gathered && t->registered && queued(t)) {
        if (flush(t) < 0) {
            t->wlen = t->wpos = 0;
            if (bp_transport_fatal_errno(t, errno, "Fatal write error on socket transport") < 0) return NULL;
        } else if (maybe_pause_protocol(t) < 0) {
            return NULL;
        }
    }
    t->gathered = 0;
    bp_transport_arm(t); /* level mode: what the kernel refused wants EPOLLOUT */
    Py_RETURN_NONE;
}

PyObject *bp_core_get_write_buffer_size(PyObject *self, PyObject *unused) {
    return PyLong_FromSize_t(backlog((bp_transport *)self));
}

PyObject *bp_core_set_write_buffer_limits(PyObject *self, PyObject *args, PyObject *kwargs) {
    bp_transport *t = (bp_transport *)self;
    static char *names[] = {"high", "low", NULL};
    PyObject *ho = Py_None, *lo = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO:set_write_buffer_limits", names, &ho, &lo)) return NULL;
    Py_ssize_t high, low;
    if (ho == Py_None) high = lo == Py_None ? 64 * 1024 : 4 * PyLong_AsSsize_t(lo);
    else high = PyLong_AsSsize_t(ho);
    if (high == -1 && PyErr_Occurred()) return NULL;
    if (lo == Py_None) low = high / 4;
    else low = PyLong_AsSsize_t(lo);
    if (low == -1 && PyErr_Occurred()) return NULL;
    if (!(high >= low && low >= 0)) {
        PyErr_Format(PyExc_ValueError, "high (%zd) must be >= low (%zd) must be >= 0", high, low);
        return NULL;
    }
    t->high = (size_t)high;
    t->low = (size_t)low;
    if (maybe_pause_protocol(t) < 0) return NULL;
    Py_RETURN_NONE;
}

PyObject *bp_core_get_write_buffer_limits(PyObject *self, PyObject *unused) {
    bp_transport *t = (bp_transport *)self;
    return Py_BuildValue("(nn)", (Py_ssize_t)t->low, (Py_ssize_t)t->high);
}

/* _discard(): abort drops the queue. */
PyObject *bp_core_discard(PyObject *self, PyObject *unused) {
    bp_transport *t = (bp_transport *)self;
    t->wlen = t->wpos = 0;
    t->gathered = 0;
    Py_RETURN_NONE;
}
