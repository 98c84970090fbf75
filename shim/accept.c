/*
 * accept.c — the accept loop of a listening socket in C, for bunpy's C stream transports
 * (python/bunpy/_connect.py).
 *
 * reactor.accept_start(fd, callback, backlog) registers the listening fd once
 * (level-triggered, EPOLLIN, tagged BP_TAG_ACCEPT | fd): no reader handle. Its event only
 * queues the fd (no Python runs while the events are scanned); after the scan
 * (bp_accepts_run, before the transports are served) the fd is accepted from until EAGAIN,
 * at most `backlog` times, as asyncio's _accept_connection does: accept4 with
 * SOCK_NONBLOCK | SOCK_CLOEXEC, so the new socket needs no further syscall, and
 * callback(fd, address) for each — the callback owns the fd. An error other than "no more
 * connections" (EAGAIN, EINTR, ECONNABORTED) calls callback(-errno, None) and ends the turn.
 * reactor.accept_stop(fd) unregisters it (Server.close, or a pause on EMFILE).
 */
#include "reactor.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int lookup(bp_reactor *r, int fd, PyObject **cb, int *backlog) {
    if (!r->listeners) return 0;
    PyObject *key = PyLong_FromLong(fd);
    if (!key) return -1;
    PyObject *v = PyDict_GetItemWithError(r->listeners, key); /* borrowed: (callback, backlog) */
    Py_DECREF(key);
    if (!v) return PyErr_Occurred() ? -1 : 0;
    *cb = PyTuple_GET_ITEM(v, 0);
    *backlog = (int)PyLong_AsLong(PyTuple_GET_ITEM(v, 1));
    return 1;
}

/* accept_start(fd, callback, backlog) */
PyObject *bp_reactor_accept_start(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    bp_reactor *r = (bp_reactor *)self;
    if (nargs != 3 || !PyLong_Check(args[0]) || !PyCallable_Check(args[1]) || !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "accept_start(fd, callback, backlog)");
        return NULL;
    }
    if (r->epfd < 0) return bp_reactor_closed_error();
    long fd = PyLong_AsLong(args[0]);
    long backlog = PyLong_AsLong(args[2]);
    if ((fd == -1 || backlog == -1) && PyErr_Occurred()) return NULL;
    if (fd < 0 || fd > 0x3fffffff) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %ld", fd);
        return NULL;
    }
    if (backlog < 1) backlog = 1;
    if (backlog > 65536) backlog = 65536;
    if (!r->listeners && !(r->listeners = PyDict_New())) return NULL;
    PyObject *v = Py_BuildValue("(Ol)", args[1], backlog);
    if (!v) return NULL;
    int rc = PyDict_SetItem(r->listeners, args[0], v);
    Py_DECREF(v);
    if (rc < 0) return NULL;
    if (bp_reactor_own(r, (int)fd, EPOLLIN, BP_TAG_ACCEPT | (uint64_t)fd) < 0) {
        int err = errno;
        if (PyDict_DelItem(r->listeners, args[0]) < 0) PyErr_Clear();
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* accept_stop(fd) -> True if accept_start had it */
PyObject *bp_reactor_accept_stop(PyObject *self, PyObject *arg) {
    bp_reactor *r = (bp_reactor *)self;
    if (!PyLong_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "accept_stop(fd)");
        return NULL;
    }
    if (!r->listeners) Py_RETURN_FALSE;
    int has = PyDict_Contains(r->listeners, arg);
    if (has <= 0) return has < 0 ? NULL : Py_NewRef(Py_False);
    long fd = PyLong_AsLong(arg);
    if (PyDict_DelItem(r->listeners, arg) < 0) return NULL;
    bp_reactor_disown(r, (int)fd); /* (queued events of it are skipped: no longer listed) */
    Py_RETURN_TRUE;
}

/* A listening fd is readable. No Python runs here. */
void bp_accept_event(bp_reactor *r, int fd) {
    if (r->napend == r->apcap) {
        int cap = r->apcap ? r->apcap * 2 : 8;
        int *p = PyMem_Realloc(r->apend, (size_t)cap * sizeof *p);
        if (!p) return; /* level-triggered: the next wait reports it again */
        r->apend = p;
        r->apcap = cap;
    }
    r->apend[r->napend++] = fd;
}

/* The peer's address as socket.accept() gives it; None where Python should ask itself. */
static PyObject *address(struct sockaddr_storage *ss, socklen_t len) {
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        if (!inet_ntop(AF_INET, &a->sin_addr, host, sizeof host)) Py_RETURN_NONE;
        return Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (a->sin6_scope_id || !inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host)) Py_RETURN_NONE;
        return Py_BuildValue("(siII)", host, (int)ntohs(a->sin6_port), (unsigned)ntohl(a->sin6_flowinfo),
                             (unsigned)a->sin6_scope_id);
    }
    if (ss->ss_family == AF_UNIX) {
        struct sockaddr_un *a = (struct sockaddr_un *)ss;
        size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
        if (n > 0 && a->sun_path[0] == 0) return PyBytes_FromStringAndSize(a->sun_path, (Py_ssize_t)n); /* abstract */
        return PyUnicode_DecodeFSDefaultAndSize(a->sun_path, (Py_ssize_t)strnlen(a->sun_path, n));
    }
    Py_RETURN_NONE;
}

static int call(PyObject *cb, long fd, PyObject *addr) {
    PyObject *f = PyLong_FromLong(fd);
    if (!f) return -1;
    PyObject *args[2] = {f, addr};
    PyObject *v = PyObject_Vectorcall(cb, args, 2, NULL);
    Py_DECREF(f);
    if (!v) return -1;
    Py_DECREF(v);
    return 0;
}

/* One listening fd's turn: accept up to its backlog. -1 if the callback raised. */
static int accept_from(bp_reactor *r, int lfd) {
    PyObject *cb;
    int backlog = 0;
    int found = lookup(r, lfd, &cb, &backlog);
    if (found <= 0) return found;
    PyObject *held = Py_NewRef(cb); /* the callback may stop this listener */
    int rc = 0;
    for (int i = 0; i < backlog; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        memset(&ss, 0, sizeof ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) break;
            rc = call(held, -(long)errno, Py_None);
            break;
        }
        PyObject *addr = address(&ss, len);
        if (!addr) {
            close(fd);
            rc = -1;
            break;
        }
        rc = call(held, fd, addr);
        Py_DECREF(addr);
        if (rc < 0) break;
        /* the callback closed the server (or paused it): stop accepting */
        int again = lookup(r, lfd, &cb, &backlog);
        if (again <= 0) {
            rc = again;
            break;
        }
    }
    Py_DECREF(held);
    return rc;
}

/* The listening fds that were readable in this iteration's events. */
int bp_accepts_run(bp_reactor *r) {
    for (int i = 0; i < r->napend; i++) {
        if (accept_from(r, r->apend[i]) < 0) {
            /* the rest: level-triggered, the next wait reports them again */
            r->napend = 0;
            return -1;
        }
    }
    r->napend = 0;
    return 0;
}

void bp_accepts_clear(bp_reactor *r) {
    PyMem_Free(r->apend);
    r->apend = NULL;
    r->napend = r->apcap = 0;
    Py_CLEAR(r->listeners);
}
