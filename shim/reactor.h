/*
 * reactor.h — what the three files of _bunpy.Reactor share (internal):
 *   reactor.c  the type, its life, fd registration and waiting in epoll;
 *   timers.c   the timer heap;
 *   handles.c  running asyncio handles from C (one loop iteration);
 *   loopcalls.c  the loop's call_soon/call_at/call_later/_timer_handle_cancelled in C;
 *   transport.c, transmit.c  the C stream transport (reads; writes).
 */
#ifndef BUNPY_REACTOR_H
#define BUNPY_REACTOR_H

#include "context.h"
#include <sys/epoll.h>

#define BP_EVENT_READ 1  /* selectors.EVENT_READ  */
#define BP_EVENT_WRITE 2 /* selectors.EVENT_WRITE */

typedef struct {
    double when;
    uint64_t seq;      /* ties keep the order timers were scheduled in */
    PyObject *handle;  /* a TimerHandle (strong ref) */
} bp_timer;

/* epoll data of a transport's fd: this tag | fd (transport.c) */
#define BP_TAG_TRANSPORT (4ULL << 40)
/* epoll data of a listening fd accepted from in C: this tag | fd (accept.c) */
#define BP_TAG_ACCEPT (5ULL << 40)

typedef struct bp_transport bp_transport;

typedef struct {
    PyObject_HEAD
    bp_interp *st;            /* module state of its interpreter: the attribute names    */
    int epfd;
    int wake_fd;
    atomic_int wake_pending;
    bp_context *ctx;          /* its requests end this reactor's waits; NULL if none   */
    PyObject *keys;           /* dict fd -> selectors.SelectorKey, shared with _loop.py */
    int nfds;                 /* user fds registered now                                */
    bp_timer *heap;
    Py_ssize_t n, cap;
    Py_ssize_t cancelled;     /* tombstones in the heap                                */
    uint64_t seq;
    PyObject *handle_type;    /* asyncio.Handle and TimerHandle: run from C (configure()) */
    PyObject *timer_type;
    PyObject *report;         /* report(handle, exc): a callback raised                   */
    int waiting;              /* a thread is in epoll_wait on this set (GIL released)     */
    int sig_slot;             /* its slot in loop.c's signal table + 1; 0: none           */
    int own_table;            /* made in a context with an fd table of its own (fdtable.c) */
    int sig_rd;               /* the fd the slot's signals are read from (sig_slot != 0)  */
    int nudged;               /* polled on a context thread with its own fd table: that
                                 context's wake fd is in its set (interrupts wake it)     */
    bp_transport **tmap;      /* fd -> its C transport (strong refs), tcap entries         */
    int tcap;
    bp_transport *pend_head;  /* transports with an event or data left to read (strong)   */
    bp_transport *pend_tail;
    char *rbuf;               /* the read buffer transports share                         */
    PyObject *buffered_type;  /* asyncio.BufferedProtocol (transport.c)                   */
    /* connect.c: connects in progress on fds registered for a transport to come */
    PyObject *connecting;     /* dict fd -> callback(err)                                 */
    uint32_t *cmask;          /* fd -> C_* state and the events seen, ccap entries        */
    int ccap;
    int *cpend, ncpend, cpcap; /* fds whose connect may have ended in this iteration     */
    int cpend_lost;
    /* accept.c: listening fds accepted from in C */
    PyObject *listeners;      /* dict fd -> (callback, backlog)                           */
    int *apend, napend, apcap; /* listening fds readable in this iteration               */
    /* loopcalls.c: the C call_soon/call_at/call_later of one loop */
    PyObject *call_loop, *call_ready;  /* the loop and its ready deque (strong)           */
    PyObject *call_fallback[3];        /* its Python call_soon, call_at, call_later       */
    char calls_fast, own_clock, slots_ok;
    char level;               /* C transports registered level-triggered and re-armed on
                                 every change of interest (registration("level"): for
                                 comparing against the lifetime registration)            */
    Py_ssize_t slot_off[9];            /* offsets of the handles' slots (BP_SLOT_*)        */
    struct epoll_event events[256];
} bp_reactor;

/* An interned attribute name of the reactor's interpreter (BP_NAME_*). */
#define NAME(r, k) ((r)->st->names[BP_NAME_##k])

/* _bunpy.StreamCore (transport.c): the C half of a stream socket transport */
struct bp_transport {
    PyObject_HEAD
    PyObject *reactor;        /* bp_reactor (strong)                                  */
    PyObject *loop, *sock, *protocol;
    PyObject *owner;          /* the Python transport (python/bunpy/_transport.py)   */
    PyObject *data_received;  /* bound methods of the protocol, for the read path   */
    PyObject *get_buffer, *buffer_updated;
    PyObject *minus_one;
    int fd;
    char buffered, registered, pending, closing, eof_requested, eof_received, paused, protocol_paused;
    char readable, writable;  /* edge-triggered readiness not used up yet            */
    char hangup;              /* the peer's FIN or an error was signalled            */
    char big_reads;           /* the last read was large: read into a bytes directly */
    char gathered;            /* the queue holds writes not tried yet (transmit.c)  */
    char serving;             /* its reads run now: serve() sends what they write   */
    char level;               /* registered in the reactor's level mode (at its start) */
    uint32_t armed;           /* level mode: the events registered now               */
    int conn_lost;
    char *wbuf;               /* write queue: bytes [wpos, wlen) of wbuf              */
    size_t wlen, wpos, wcap, high, low;
    bp_transport *pend_next;
};
void bp_transport_event(bp_reactor *r, uint64_t data, uint32_t events); /* no Python runs */
/* transport.c, for transmit.c: the Python transport's cold methods; an errno as a fatal
   error (0, or -1 for an exception that must go up); a transport's turn in the next run */
enum { BP_COLD_ON_EOF, BP_COLD_FATAL_ERROR, BP_COLD_WRITE_DRAINED, BP_COLD_PROTOCOL_CALL_FAILED };
PyObject *bp_transport_cold(bp_transport *t, int which, PyObject *arg, const char *msg);
int bp_transport_fatal_errno(bp_transport *t, int err, const char *msg);
void bp_transport_pend(bp_reactor *r, bp_transport *t);
void bp_transport_arm(bp_transport *t); /* the reactor's level mode: register what is wanted now */
/* transmit.c: the write half of StreamCore */
int bp_transport_on_writable(bp_transport *t);
PyObject *bp_core_write(PyObject *self, PyObject *data);
PyObject *bp_core_writelines(PyObject *self, PyObject *lines);
PyObject *bp_core_flush(PyObject *self, PyObject *unused);
PyObject *bp_core_get_write_buffer_size(PyObject *self, PyObject *unused);
PyObject *bp_core_set_write_buffer_limits(PyObject *self, PyObject *args, PyObject *kwargs);
PyObject *bp_core_get_write_buffer_limits(PyObject *self, PyObject *unused);
PyObject *bp_core_discard(PyObject *self, PyObject *unused);
int bp_transports_run(bp_reactor *r);    /* serves the pending transports; -1 on error  */
void bp_transports_clear(bp_reactor *r); /* the reactor closes                          */
PyObject *bp_transport_type_new(PyObject *module);
/* register fd for good in this set (transport.c); and remove it */
int bp_reactor_own(bp_reactor *r, int fd, uint32_t events, uint64_t data);
void bp_reactor_disown(bp_reactor *r, int fd);

/* connect.c: a non-blocking connect completed on the reactor (python/bunpy/_connect.py) */
PyObject *bp_reactor_connect_wait(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *bp_reactor_connect_cancel(PyObject *self, PyObject *arg);
void bp_connect_event(bp_reactor *r, int fd, uint32_t events);   /* no Python runs */
int bp_connects_run(bp_reactor *r);                              /* -1: a callback raised */
int bp_connect_adopt(bp_reactor *r, int fd, uint32_t *events);   /* StreamCore._start  */
void bp_connect_release(bp_reactor *r, int fd);                  /* StreamCore._stop   */
void bp_connects_clear(bp_reactor *r);

/* accept.c: the accept loop of a listening socket in C (python/bunpy/_connect.py) */
PyObject *bp_reactor_accept_start(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *bp_reactor_accept_stop(PyObject *self, PyObject *arg);
void bp_accept_event(bp_reactor *r, int fd);                     /* no Python runs */
int bp_accepts_run(bp_reactor *r);                               /* -1: a callback raised */
void bp_accepts_clear(bp_reactor *r);

/* loop.c: process signals for contexts (BP_SIG_* bits) */
#define BP_SIG_INT 1u
#define BP_SIG_TERM 2u
int bp_loop_signals_claim(int fd, int owns_fd);    /* a slot written through fd (closed on release
                                                      if owns_fd); -1: full */
void bp_loop_signals_want(int slot, unsigned mask);
unsigned bp_loop_signals_take(int slot);           /* the pending signals, cleared             */
void bp_loop_signals_release(int slot);            /* closes its fd if it owns it               */

/* reactor.c */
PyObject *bp_reactor_closed_error(void);
/* Waits for events (GIL released; timeout < 0: for ever). The event count, -1 on error. */
int bp_reactor_wait(bp_reactor *r, double timeout);
/* The next ready user fd after a wait, from event *i on, as selectors reports it: its key
   (borrowed) and the events it asked for in *mask. NULL when none is left, or with an
   error set. Internal fds (wake-ups) are drained on the way. */
PyObject *bp_reactor_next_key(bp_reactor *r, int *i, int n, int *mask);

/* timers.c */
int bp_timer_cancelled(bp_reactor *r, PyObject *handle);  /* 1, 0, or -1 on error        */
/* Seconds to the first live timer, -1 without timers; -1 with an error set on failure. */
double bp_timers_timeout(bp_reactor *r, double now);
int bp_timers_pop_due(bp_reactor *r, double end, PyObject *append); /* due ones to append() */
void bp_timers_clear(bp_reactor *r);
PyObject *bp_reactor_push(PyObject *self, PyObject *handle);
int bp_timers_insert(bp_reactor *r, double when, PyObject *handle); /* 0, or -1: no memory */
PyObject *bp_reactor_cancelled(PyObject *self, PyObject *unused);
PyObject *bp_reactor_timeout(PyObject *self, PyObject *arg);
PyObject *bp_reactor_pop_due(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *bp_reactor_clear(PyObject *self, PyObject *unused);
Py_ssize_t bp_reactor_len(PyObject *self);
PyObject *bp_reactor_item(PyObject *self, Py_ssize_t i);

/* loopcalls.c; the slots of asyncio's Handle, then TimerHandle's */
enum { BP_SLOT_CALLBACK, BP_SLOT_ARGS, BP_SLOT_CANCELLED, BP_SLOT_LOOP, BP_SLOT_SOURCE_TRACEBACK, BP_SLOT_REPR,
       BP_SLOT_CONTEXT, BP_SLOT_SCHEDULED, BP_SLOT_WHEN, BP_SLOT_COUNT };
int bp_calls_resolve(bp_reactor *r);                      /* configure(): the slot offsets */
int bp_calls_cancelled(bp_reactor *r, PyObject *h);       /* 1, 0, or -1: cannot say     */
PyObject *bp_calls_handle(bp_reactor *r, PyObject *callback, PyObject *args, PyObject *context, PyObject *loop);
void bp_calls_clear(bp_reactor *r);
PyObject *bp_reactor_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *bp_reactor_calls_mode(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

/* handles.c */
PyObject *bp_reactor_configure(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *bp_reactor_soon(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *bp_reactor_run_ready(PyObject *self, PyObject *ready);
PyObject *bp_reactor_run_transports(PyObject *self, PyObject *unused);
PyObject *bp_reactor_run_once(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

#endif
