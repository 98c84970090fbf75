/*
 * echofloor.c — _bunpy.echo_floor(size, conns, round_trips) -> seconds: the Protocol echo
 * of bench/loop.bench.ts with no Python and no event loop library at all — loopback TCP
 * connections, an echo server and ping clients on one epoll set in one thread, the GIL
 * released. It is the floor under every loop's echo: what the kernel's loopback costs.
 *
 * Each client sends `size` bytes, waits for all of them to come back, and sends again,
 * until `round_trips` (spread over `conns` connections) are done; the server writes back
 * what it reads, queueing what the socket does not take. Level-triggered, TCP_NODELAY,
 * one 256 KB read buffer. The same number of round trips runs first, untimed, to warm the
 * connections up as the loops' reused ones are.
 */
#include "internal.h"
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FLOOR_BUF (256 * 1024)
#define FLOOR_MAX_CONNS 64

typedef struct {
    int fd;
    int client;
    char *out;          /* bytes to send: [opos, olen) */
    size_t olen, opos, ocap;
    size_t got;         /* client: bytes of the current message back          */
    long left;          /* client: round trips still to make                  */
    int want_out;       /* EPOLLOUT asked for                                  */
} floor_conn;

static int queue_out(floor_conn *c, const char *p, size_t n) {
    if (c->opos == c->olen) c->opos = c->olen = 0;
    if (c->olen + n > c->ocap) {
        size_t cap = c->ocap ? c->ocap : 64 * 1024;
        while (cap < c->olen + n) cap *= 2;
        char *b = realloc(c->out, cap);
        if (!b) return -1;
        c->out = b;
        c->ocap = cap;
    }
    memcpy(c->out + c->olen, p, n);
    c->olen += n;
    return 0;
}

/* Sends what is queued; asks for EPOLLOUT while something is left. 0, or -1 (errno). */
static int push_out(int ep, floor_conn *c) {
    while (c->opos < c->olen) {
        ssize_t n = send(c->fd, c->out + c->opos, c->olen - c->opos, MSG_NOSIGNAL);
        if (n > 0) {
            c->opos += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        return -1;
    }
    int want = c->opos < c->olen;
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) return -1;
        c->want_out = want;
    }
    return 0;
}

static int nodelay_nonblock(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* `trips` round trips of `size` bytes over the connections: 0, or -1 (errno). */
static int ping_pong(int ep, floor_conn *cs, int conns, const char *msg, size_t size, long trips, char *buf) {
    int active = 0;
    for (int i = 0; i < conns; i++) {
        floor_conn *cl = &cs[2 * i];
        cl->left = trips / conns + (i < trips % conns);
        cl->got = 0;
        if (cl->left <= 0) continue;
        active++;
        if (queue_out(cl, msg, size) < 0 || push_out(ep, cl) < 0) return -1;
    }
    struct epoll_event evs[2 * FLOOR_MAX_CONNS];
    while (active > 0) {
        int n = epoll_wait(ep, evs, 2 * FLOOR_MAX_CONNS, 5000);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1; /* an error, or stuck for 5 s */
        for (int e = 0; e < n; e++) {
            floor_conn *c = evs[e].data.ptr;
            if (evs[e].events & EPOLLOUT && push_out(ep, c) < 0) return -1;
            if (!(evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            ssize_t r = recv(c->fd, buf, FLOOR_BUF, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) {
                if (r == 0) errno = ECONNRESET;
                return -1;
            }
            if (!c->client) {
                if (queue_out(c, buf, (size_t)r) < 0 || push_out(ep, c) < 0) return -1;
                continue;
            }
            c->got += (size_t)r;
            if (c->got < size) continue;
            c->got = 0;
            if (--c->left == 0) {
                active--;
                continue;
            }
            if (queue_out(c, msg, size) < 0 || push_out(ep, c) < 0) return -1;
        }
    }
    return 0;
}

/* returns elapsed seconds, or -1 with errno */
static double run_floor(size_t size, int conns, long trips) {
    floor_conn cs[2 * FLOOR_MAX_CONNS];
    memset(cs, 0, sizeof cs);
    int ep = -1, lfd = -1, made = 0;
    double elapsed = -1;
    char *buf = malloc(FLOOR_BUF), *msg = malloc(size);
    if (!buf || !msg) goto out;
    memset(msg, 'x', size);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, conns) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) < 0)
        goto out;
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) goto out;
    for (int i = 0; i < conns; i++) {
        floor_conn *cl = &cs[2 * i], *sv = &cs[2 * i + 1];
        cl->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (cl->fd < 0 || connect(cl->fd, (struct sockaddr *)&a, sizeof a) < 0) goto out;
        sv->fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        made++;
        if (sv->fd < 0 || nodelay_nonblock(cl->fd) < 0 || nodelay_nonblock(sv->fd) < 0) goto out;
        cl->client = 1;
        for (int k = 0; k < 2; k++) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[2 * i + k]};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[2 * i + k].fd, &ev) < 0) goto out;
        }
    }
    /* the same number of round trips first, untimed: the loops under test reuse warm
       connections (TCP's windows on a fresh connection grow over the first megabytes) */
    if (ping_pong(ep, cs, conns, msg, size, trips, buf) < 0) goto out;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (ping_pong(ep, cs, conns, msg, size, trips, buf) < 0) goto out;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    elapsed = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
out:;
    int saved = errno;
    for (int i = 0; i < 2 * made; i++) {
        if (cs[i].fd > 0) close(cs[i].fd);
        free(cs[i].out);
    }
    if (made < conns && cs[2 * made].fd > 0) close(cs[2 * made].fd);
    if (ep >= 0) close(ep);
    if (lfd >= 0) close(lfd);
    free(buf);
    free(msg);
    if (elapsed < 0 && !saved) saved = EIO;
    errno = saved;
    return elapsed;
}

/* echo_floor(size, conns, round_trips) -> seconds */
PyObject *bp_echo_floor(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "echo_floor(size, conns, round_trips)");
        return NULL;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[0]);
    long conns = PyLong_AsLong(args[1]);
    long trips = PyLong_AsLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (size < 1 || size > (64 << 20) || conns < 1 || conns > FLOOR_MAX_CONNS || trips < 1) {
        PyErr_SetString(PyExc_ValueError, "echo_floor: size in 1..64 MB, conns in 1..64, round_trips >= 1");
        return NULL;
    }
    double s;
    Py_BEGIN_ALLOW_THREADS
    s = run_floor((size_t)size, (int)conns, trips);
    Py_END_ALLOW_THREADS
    if (s < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyFloat_FromDouble(s);
}
