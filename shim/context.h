/*
 * context.h — what context.c (context life), serve.c (running requests) and wait.c
 * (waiting) share with each other and with request.c, loop.c and jscall.c (calls and
 * messages from a context to JS). Internal: nothing here is exported.
 */
#ifndef BUNPY_CONTEXT_H
#define BUNPY_CONTEXT_H

#include "internal.h"
#include <semaphore.h>
#include <time.h>

/* A context's sandbox policy (sandbox.c); its objects belong to the context's interpreter. */
typedef struct bp_policy {
    int active;
    int refuse_processes, refuse_ctypes, refuse_sockets, refuse_shared;
    int env_rule;             /* `env` given (owngil): os.environ holds the listed names only, and
                                 programs it starts get that environment, not the process's */
    int require_kernel;       /* refuse to start when a kernel rule cannot be applied    */
    long max_threads;         /* threads the context may have running besides its own; -1: any */
    size_t memory_limit;      /* owngil: bytes its interpreter may allocate (memcap.c); 0: any */
    int owngil;               /* how they are counted: the interpreter's thread states, or */
    unsigned long ident;      /* (worker) the threading threads marked with this context thread's ident */
    PyObject *deny_imports;   /* frozenset of module names, or NULL              */
    PyObject *allow_paths;    /* tuple of real directory paths, or NULL: any file */
    PyObject *read_paths;     /* tuple: also readable (Python's own files)        */
    int net_rules;            /* `network` given: TCP to/on the listed ports only  */
    int files_by_kernel;      /* a Landlock domain holds `files` on this thread: relative
                                 paths are left to it (the audit event lacks their dir_fd) */
    PyObject *connect_ports, *bind_ports; /* tuples of ints (net_rules)             */
} bp_policy;

int bp_sandbox_install(void);
int bp_policy_load(bp_policy *pol, PyObject *spec);
void bp_policy_clear(bp_policy *pol);
int bp_policy_refuses(const char *rule);
PyObject *bp_guard_extensions(PyObject *m, PyObject *const *args, Py_ssize_t nargs); /* _bunpy.guard_extensions */

enum { CTX_STARTING = 0, CTX_RUNNING = 1, CTX_CLOSING = 2, CTX_ENDING = 3, CTX_CLOSED = 4, CTX_DEAD = 5 };

/* After close()'s grace period, how long interrupts are repeated before the context is
   abandoned (its thread detached, close() resolved). */
#define BP_ABANDON_MS 2000

/* A context with an fd table of its own (fdtable.c) can put another file under the numbers
   of its wake-up pipes, or read them from threads of its own: its waits on them are cut
   this often, and look at what they wait for again, so it is slowed down at worst, and
   close() still ends it (an idle wake-up a quarter second costs nothing measurable). */
#define BP_OWN_FDS_WAIT_MS 250

/* How long an idle context spins before sleeping on its wake-up fd (a wake-up costs tens of µs). */
#define SPIN_NS 50000

struct bp_request {
    bp_node node;             /* queue link: must stay first                          */
    bp_context *ctx;
    bp_port *reply;           /* completion goes to this port (a ref is held)          */
    uint32_t id;
    int32_t op;
    atomic_int cancelled;
    int32_t status;
    uint8_t *data;            /* payload, then the result (points at `inline_data` or heap) */
    uint32_t len;
    uint32_t inline_cap;      /* bytes available in inline_data                          */
    sem_t *sync;              /* bp_ctx_call_sync waits here instead of a completion   */
    atomic_int done;          /* set before sync is posted: lets the waiter spin first  */
    int borrowed;             /* `reply` is its context's owner port: no ref taken (the
                                 context's own ref keeps the port while the request lives) */
    bp_request *outer;        /* the request this one runs inside of (nested via JS)    */
    atomic_ullong seq;        /* which run of its context this is; 0 until it starts    */
    atomic_int parked;        /* its result is an awaitable running as a task on the loop */
    bp_request *park_prev, *park_next; /* the context's parked list (context thread only)  */
    PyObject *task;           /* parked: the asyncio task, and the token its end presents */
    PyObject *token;
    uint8_t inline_data[];    /* the payload, allocated with the request                */
};

/* An fd other threads write to wake a context's thread (wakefd.c): one eventfd (rd == wr),
   or for a context with an fd table of its own a pipe whose write end only Bun's table holds. */
typedef struct {
    int rd, wr;
} bp_wakefd;
int bp_wakefd_open(bp_wakefd *w, int pipe_for_own_table); /* -1: failed (both fds -1) */
void bp_wakefd_close(bp_wakefd *w);
void bp_wakefd_post(int wr);  /* never blocks */
/* own_table: rd is read on a thread of a context whose fd table is its own (fdtable.c),
   where the context may have made it blocking or put another file under its number */
void bp_wakefd_drain(int rd, int own_table);

struct bp_context {
    int32_t mode;
    atomic_int state;
    atomic_int refs;          /* JS + the context thread + running interrupters        */
    pthread_t thread;
    unsigned long ident;      /* threading.get_ident() of the context thread           */
    PyInterpreterState *interp;
    PyObject *main_module;    /* this context's __main__                               */
    bp_mpsc requests;
    atomic_int sleeping;
    bp_wakefd wake;           /* a request arrived (or an interrupt for a loop it waits in) */
    atomic_int submitting;        /* producers between their state check and their push  */
    pthread_mutex_t life_lock;    /* guards `interrupters` against the interpreter's end */
    pthread_cond_t life_cond;
    int interrupters;
    int watchdog;             /* life_lock: 1 while close's watchdog runs, 2 once it stopped
                                 and left its reference for the context thread to drop   */
    bp_request *current;      /* changed only with this context's GIL held              */
    bp_io scratch;            /* the writer's buffer on this thread                      */
    atomic_ullong completed;
    bp_request *start;        /* completed once the interpreter is up (or failed)       */
    bp_port *owner;           /* the JS thread that created it: bunpy.send goes there     */
    struct bp_context *next_of_owner; /* owner->contexts: not freed by JS yet (its thread only) */
    int depth;                /* JS callbacks being awaited on this thread (nesting)      */
    bp_request *deferred_close; /* a close taken while a JS callback was awaited        */
    bp_node *batch;           /* requests taken off the queue, not yet run (in order)     */
    atomic_int unread;        /* messages sent but not drained by JS yet (back-pressure)  */
    bp_policy policy;         /* sandbox rules for code running on this context's thread  */
    uint64_t seq;             /* runs started so far (request seq numbers)               */
    atomic_ullong running_seq;/* seq of the request running now, 0 when idle             */
    int no_js;                /* >0 while a result is written: calls into JS are refused */
    atomic_int interrupts;    /* an async exception was set: clear it when the run ends  */
    PyObject *interrupt_type; /* bunpy.Interrupted of this context's interpreter (strong)  */
    /* closing (see "close" in context.c) */
    atomic_int close_gen;     /* 1 once close() was called: no wait goes on from then     */
    atomic_int hard_close;    /* the grace period is over: interrupt everything, skip queued */
    atomic_int abandoned;     /* the watchdog gave up on the thread                        */
    atomic_int close_claimed; /* who finishes `close_req`: the context thread or the watchdog */
    bp_request *close_req;    /* the close request (completed once, by whoever claims it) */
    atomic_int delivering;    /* a watchdog delivery thread is entering the interpreter   */
    atomic_ullong steps;      /* loop iterations begun (a parked task spinning: no change) */
    atomic_int in_step;       /* the thread is inside a loop iteration                     */
    atomic_int live_released; /* bp_live_contexts no longer counts this context           */
    atomic_int loop_wake_fd;  /* an event loop's wake-up fd while the thread waits in it, else -1 */
    uint32_t close_grace_ms;  /* close(): how long before the watchdog interrupts          */
    /* the event loop (#5): created on first use, driven between requests by the thread  */
    PyObject *loop;           /* the context's BunpyEventLoop (strong), or NULL          */
    PyObject *loop_reactor;   /* its _bunpy.Reactor (borrowed; cleared when it closes)    */
    bp_request *parked;       /* requests whose awaitable runs as a task on `loop`        */
    atomic_int task_cancels;  /* bumped when JS cancels a parked request                  */
    int task_cancels_seen;
    int own_fds;              /* a sandboxed owngil context: its threads have their own fd
                                 table (fdtable.c); no fd number crosses to other threads */
    struct bp_bell *bell;     /* own_fds: rings JS threads' doorbells for it (bell.c), else NULL */
    bp_wakefd sig;            /* own_fds: SIGINT/SIGTERM reach its loop by it, made before the
                                 thread starts so the handler's table has the write end; else -1 */
    bp_wakefd alert;          /* ends bunpy.sleep on a cancel or the close                */
    bp_wakefd answers;        /* in the loop: async_call answers are waiting               */
    bp_mpsc answered;         /* async_calls JS answered, for _bunpy.take_answers (jscall.c);
                                 a process context: answers to its host's calls (relay.c) */
    struct bp_relay *relay;   /* BP_CTX_PROCESS: the host process and its channel (relay.c) */
    _Atomic(bp_feed_fn) feed; /* bunpy-host: polled for requests by the thread (wait.c)   */
    void *feed_arg;
    int feed_fd;              /* its producer's bell (a pipe's read end) (bp_ctx_sleep polls it too), or -1 */
};


static inline int64_t bp_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* request.c */
bp_request *bp_request_new(bp_context *c, bp_io *io, uint32_t id, int32_t op, uint32_t len); /* copies io->buf[0..len) */
void bp_request_free(bp_request *r);
/* Finishes a request with a result copied from src (or a BP_ERR_* record) and delivers it. */
void bp_request_complete(bp_request *r, int32_t status, const uint8_t *src, uint32_t len);
void bp_request_fail(bp_request *r, int32_t status, const char *msg); /* record: STR msg */
int32_t bp_ctx_push(bp_context *c, bp_request *r);                   /* onto the queue, waking it */

/* bell.c: a sandboxed owngil context's doorbells, rung from a thread in the shared fd table */
typedef struct bp_bell bp_bell;
bp_bell *bp_bell_new(void);                 /* its (detached) ringer thread; no fd          */
void bp_bell_ring(bp_bell *b, bp_port *p);  /* p's doorbell is rung soon, by the ringer    */
void bp_bell_stop(bp_bell *b);              /* the context is gone: ring what is left, end */
/* Rings p's doorbell for c (NULL: a thread of the main interpreter): through c's bell if
   it has one, else directly. */
void bp_ring_doorbell(bp_context *c, bp_port *p);

/* The context whose thread this is (NULL on other threads). */
extern _Thread_local bp_context *bp_this_context;

void bp_ctx_ref(bp_context *c);
/* The JS thread of port p ended with contexts it had not freed: closes them (io.c). */
void bp_port_close_contexts(bp_port *p);
void bp_ctx_unref(bp_context *c);
void bp_ctx_wake(bp_context *c);
/* Requests queued, or parked tasks to cancel (context thread only). */
int bp_ctx_has_work(bp_context *c);
/* Ends a bunpy.sleep in progress on the context (a cancel, or the close). */
void bp_ctx_alert(bp_context *c);
void bp_ctx_sleep(bp_context *c, int (*ready)(bp_context *, void *), void *arg, int timeout_ms);
/* Waits, GIL released, until *flag is set, serving requests that arrive meanwhile (a JS
   callback may call back into this context). GIL held on entry and exit; -1 with a Python
   error when the nesting limit is reached, -2 with bunpy.Interrupted when the wait was cut
   (the call it runs for was cancelled, or close() was called). */
int bp_ctx_wait_serving(bp_context *c, atomic_int *flag);
/* Why code running on the context must stop waiting (bunpy.call's wait for JS, bunpy.sleep,
   send back-pressure): the message for bunpy.Interrupted, or NULL to go on. `owner` is the
   request the waiting code runs for (NULL: none known). Once close() was called, no wait
   goes on. */
const char *bp_ctx_wait_cut(bp_context *c, bp_request *owner);
/* Raises bunpy.Interrupted(msg) (KeyboardInterrupt when the type is not known). */
void bp_ctx_raise_interrupted(bp_context *c, const char *msg);
/* The next request to run, in order (context thread only; wait.c). */
bp_request *bp_ctx_next_request(bp_context *c);
/* Waits, GIL released, until a request arrives (spins briefly, then sleeps; wait.c). */
void bp_ctx_wait_for_work(bp_context *c);
/* Runs a request and completes it, or parks it when its result is awaitable (serve.c). */
void bp_ctx_serve(bp_context *c, bp_request *req);
/* Starts a detached thread that interrupts the run `seq` for as long as it runs (request.c),
   or, for seq 0 (the close watchdog), whatever runs, once. */
int32_t bp_interrupter_start(bp_context *c, uint64_t seq);
/* Writes a request's result (or the Python error set when v is NULL; v is stolen) and
   hands it to JS. Context thread, GIL held. */
void bp_ctx_complete_with(bp_context *c, bp_request *req, PyObject *v, int deep, int32_t read_failed);

/* loop.c: the context's event loop, driven by its thread between requests. GIL held. */
/* Runs an awaitable a request returned as a task (a coroutine's first step at once, 3.12+).
   Returns its result if it finished already; NULL with *parked = 1 when the task goes on
   (the request completes when it ends); NULL with an error set if it could not start. */
PyObject *bp_loop_start(bp_context *c, bp_request *req, PyObject *awaitable, int *parked);
PyObject *bp_loop_finish_parked(PyObject *token, PyObject *task);      /* _bunpy.finish_parked */
void bp_loop_cancel_tasks(bp_context *c);  /* cancels the tasks of requests JS cancelled     */
void bp_loop_step(bp_context *c);          /* one loop iteration; waits for work inside     */
void bp_loop_close(bp_context *c);         /* fails parked requests, closes the loop         */
void bp_loop_lost(bp_context *c);          /* the loop's reactor was closed by code in the
                                              context: as close; the next use makes a new loop */
void bp_loop_abandon(bp_context *c);       /* the thread died: fail parked requests, no Python */
/* The parked request whose task is running right now (GIL held; any thread), or NULL. */
bp_request *bp_loop_running_request(bp_context *c);
/* The request a wait on the context thread belongs to: the current one, else the parked
   request whose task is running (GIL held), or NULL. */
bp_request *bp_ctx_wait_owner(bp_context *c);
PyObject *bp_sleep(double seconds);        /* bunpy.sleep outside a running loop            */

/* Hands a finished request (or a message) to its port and rings the doorbell on the edge. */
void bp_request_deliver(bp_request *r);
/* relay.c / jscall.c: process contexts */
typedef struct bp_relay bp_relay;
void bp_relay_free(bp_relay *r);
int bp_relay_try_send(bp_context *c, bp_request *r); /* 1: sent by the calling thread itself */
void bp_relay_poll_all(bp_relay *list, int polling);  /* JS thread: completions from the rings (ring.c) */
void bp_relay_detach(bp_context *c);                  /* JS thread: off its port's poll list  */
void bp_relay_take_all(bp_port *p, void (*each)(bp_context *)); /* ending JS thread: its process contexts, off its poll list */
int bp_relay_call(bp_context *c, const uint8_t *data, uint32_t len, uint64_t remote);
int bp_relay_message(bp_context *c, const uint8_t *data, uint32_t len);
int bp_relay_answers(bp_context *c, int (*send)(bp_context *, uint64_t, int32_t, const uint8_t *, uint32_t));
/* Frees the async_call answers nobody took (the context is being freed; jscall.c). */
void bp_ctx_drop_answers(bp_context *c);
/* bp_port_drain hands a message to JS: lets a blocked sender go on (jscall.c). */
void bp_message_drained(bp_request *r);
/* frees what a port whose JS thread is ending will never drain (request.c; that thread) */
void bp_port_drop_completions(bp_port *p);
/* answers with BP_ERR_STATE the calls such a port's JS never took (jscall.c; that thread) */
void bp_port_refuse_calls(bp_port *p);

#endif
