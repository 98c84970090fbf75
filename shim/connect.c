/*
 * connect.c — a non-blocking connect completed on the reactor, for bunpy's C stream
 * transports (python/bunpy/_connect.py).
 *
 * reactor.connect_wait(fd, callback) registers the connecting socket once, for its whole
 * life, as a C transport's fd is (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, tagged with the
 * fd): no writer handle, no level-triggered registration added and removed around the
 * connect. The EPOLLOUT (or error) edge that ends the connect queues the fd; after the scan
 * (bp_connects_run, before the transports are served) SO_ERROR is read and callback(err) is
 * called: 0 when connected, else the errno — then the fd has left the epoll set already.
 * StreamCore._start on that fd takes the registration over (bp_connect_adopt), with the
 * events that arrived between the connect and the transport's start, so no edge is lost.
 * reactor.connect_cancel(fd) drops a registration no transport took (a cancelled or failed
 * connect); the caller closes the socket after it.
 */
#include "reactor.h"
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#define C_OWNED 0x40000000u      /* registered by connect_wait, no transport took it yet */
#define C_CONNECTING 0x20000000u /* the connect has not completed                        */
#define C_QUEUED 0x10000000u     /* in r->cpend                                          */
#define C_EVENTS 0x0000ffffu     /* epoll events seen so far                             */

static int grow_masks(bp_reactor *r, int fd) {
    if (fd < r->ccap) return 0;
    int cap = r->ccap ? r->ccap : 64;
    while (cap <= fd) cap *= 2;
    uint32_t *m = PyMem_Realloc(r->cmask, (size_t)cap * sizeof *m);
    if (!m) {
        PyErr_NoMemory();
        return -1;
    }
    memset(m + r->ccap, 0, (size_t)(cap - r->ccap) * sizeof *m);
    r->cmask = m;
    r->ccap = cap;
    return 0;
}

/* connect_wait(fd, callback): see the file's comment. */
PyObject *bp_reactor_connect_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    bp_reactor *r = (bp_reactor *)self;
    if (nargs != 2 || !PyLong_Check(args[0]) || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "connect_wait(fd, callback)");
        return NULL;
    }
    if (r->epfd < 0) return bp_reactor_closed_error();
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    if (fd < 0 || fd > 0x3fffffff) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %ld", fd);
        return NULL;
    }
    if ((fd < r->tcap && r->tmap[fd]) || (fd < r->ccap && r->cmask[fd])) {
        PyErr_Format(PyExc_RuntimeError, "File descriptor %ld is used by a transport", fd);
        return NULL;
    }
    if (grow_masks(r, (int)fd) < 0) return NULL;
    if (!r->connecting && !(r->connecting = PyDict_New())) return NULL;
    if (PyDict_SetItem(r->connecting, args[0], args[1]) < 0) return NULL;
    if (bp_reactor_own(r, (int)fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, BP_TAG_TRANSPORT | (uint64_t)fd) < 0) {
        int err = errno;
        if (PyDict_DelItem(r->connecting, args[0]) < 0) PyErr_Clear();
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    r->cmask[fd] = C_OWNED | C_CONNECTING;
    Py_RETURN_NONE;
}

static void forget(bp_reactor *r, int fd) {
    r->cmask[fd] = 0;
    if (!r->connecting) return;
    PyObject *key = PyLong_FromLong(fd);
    if (!key || PyDict_DelItem(r->connecting, key) < 0) PyErr_Clear();
    Py_XDECREF(key);
}

/* connect_cancel(fd): the fd leaves the epoll set (no-op unless connect_wait has it). */
PyObject *bp_reactor_connect_cancel(PyObject *self, PyObject *arg) {
    bp_reactor *r = (bp_reactor *)self;
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    if (fd >= 0 && fd <= 0x3fffffff) bp_connect_release(r, (int)fd);
    Py_RETURN_NONE;
}

/* connect_wait's registration of fd, if no transport took it, leaves the epoll set. */
void bp_connect_release(bp_reactor *r, int fd) {
    if (fd < r->ccap && (r->cmask[fd] & C_OWNED)) {
        bp_reactor_disown(r, fd);
        forget(r, fd);
    }
}

/* An event for a tagged fd that has no transport (yet). No Python runs here. */
void bp_connect_event(bp_reactor *r, int fd, uint32_t events) {
    if (fd >= r->ccap || !(r->cmask[fd] & C_OWNED)) return;
    uint32_t m = r->cmask[fd] | (events & C_EVENTS);
    if ((m & C_CONNECTING) && !(m & C_QUEUED) && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        if (r->ncpend == r->cpcap) {
            int cap = r->cpcap ? r->cpcap * 2 : 16;
            int *p = PyMem_Realloc(r->cpend, (size_t)cap * sizeof *p);
            if (!p) { /* keep the edge: the next run reads SO_ERROR for every connecting fd */
                r->cmask[fd] = m;
                r->cpend_lost = 1;
                return;
            }
            r->cpend = p;
            r->cpcap = cap;
        }
        r->cpend[r->ncpend++] = fd;
        m |= C_QUEUED;
    }
    r->cmask[fd] = m;
}

/* One finished connect: SO_ERROR, then callback(err). -1 if the callback raised. */
static int finish(bp_reactor *r, int fd) {
    uint32_t m = r->cmask[fd];
    r->cmask[fd] = m & ~C_QUEUED;
    if (!(m & C_CONNECTING) || !(m & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return 0;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == EINPROGRESS || err == EALREADY || err == EINTR) return 0; /* not yet: the next edge */
    r->cmask[fd] &= ~C_CONNECTING;
    PyObject *key = PyLong_FromLong(fd);
    if (!key) return -1;
    PyObject *cb = r->connecting ? PyDict_GetItemWithError(r->connecting, key) : NULL;
    Py_XINCREF(cb);
    if (cb && PyDict_DelItem(r->connecting, key) < 0) PyErr_Clear();
    Py_DECREF(key);
    if (err) { /* the fd is the caller's to close: it leaves the epoll set now */
        bp_reactor_disown(r, fd);
        r->cmask[fd] = 0;
    }
    if (!cb) return PyErr_Occurred() ? -1 : 0;
    PyObject *e = PyLong_FromLong(err);
    PyObject *v = e ? PyObject_CallOneArg(cb, e) : NULL;
    Py_XDECREF(e);
    Py_DECREF(cb);
    if (!v) return -1;
    Py_DECREF(v);
    return 0;
}

/* The connects that ended in this iteration's events (before the transports are served). */
int bp_connects_run(bp_reactor *r) {
    if (r->cpend_lost) { /* an event could not be queued (no memory): look at them all */
        r->cpend_lost = 0;
        for (int fd = 0; fd < r->ccap; fd++)
            if ((r->cmask[fd] & C_CONNECTING) && !(r->cmask[fd] & C_QUEUED) && finish(r, fd) < 0) return -1;
    }
    for (int i = 0; i < r->ncpend; i++) {
        if (finish(r, r->cpend[i]) < 0) {
            /* the rest wait for the next run (SystemExit, KeyboardInterrupt, no memory) */
            memmove(r->cpend, r->cpend + i + 1, (size_t)(r->ncpend - i - 1) * sizeof *r->cpend);
            r->ncpend -= i + 1;
            return -1;
        }
    }
    r->ncpend = 0;
    return 0;
}

/* StreamCore._start on an fd connect_wait registered: the transport takes the registration
   (1) with the events seen since, or 0 when connect_wait does not have the fd. */
int bp_connect_adopt(bp_reactor *r, int fd, uint32_t *events) {
    if (fd >= r->ccap || !(r->cmask[fd] & C_OWNED) || (r->cmask[fd] & C_CONNECTING)) return 0;
    *events = r->cmask[fd] & C_EVENTS;
    r->cmask[fd] = 0; /* (a queued entry, if any, is skipped: no C_CONNECTING) */
    return 1;
}

/* The reactor closes: registrations no transport took are dropped (the fds are not ours). */
void bp_connects_clear(bp_reactor *r) {
    PyMem_Free(r->cmask);
    r->cmask = NULL;
    r->ccap = 0;
    PyMem_Free(r->cpend);
    r->cpend = NULL;
    r->ncpend = r->cpcap = 0;
    r->cpend_lost = 0;
    Py_CLEAR(r->connecting);
}
