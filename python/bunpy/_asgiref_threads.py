"""Reused threads for asgiref's per-request thread-sensitive executors (Django over ASGI).

Django's ASGIHandler runs each request inside asgiref's `ThreadSensitiveContext`: the
request's synchronous parts (the request_started receivers, `response.close()` and its
request_finished receivers, sync middleware and views) run on a thread of the request's
own, from a `ThreadPoolExecutor(max_workers=1)` made for that request. So every request
starts a thread, and at its end asgiref shuts the executor down from one more thread it
starts (a daemon thread that joins the first): two thread starts and two joins per request,
~0.6 ms on the 2-core test machine — most of what a small Django view costs, under any
server (docs/performance.md, "Django").

`ThreadLeases` keeps what that design promises — the thread-sensitive calls of one request
run on one thread, in order, and requests in flight at the same time have threads of their
own — but takes the thread from a set of idle executors kept per app and puts it back when
the request ends, instead of starting and joining threads. It does so with asgiref's own
mechanism: before the app runs, the request's context gets its own `ThreadSensitiveContext`
(so Django's `async with ThreadSensitiveContext()` finds one and does nothing) mapped to a
leased executor in `SyncToAsync.context_to_thread_executor`, where asgiref looks first.

What differs from asgiref's per-request threads: a thread serves many requests one after
the other, so `threading.local` data a request's synchronous code left on its thread is
there for a later request (as under any threaded WSGI server). Off with
`threads: "per-request"` (src/asgi.ts).
"""

import sys
from concurrent.futures import ThreadPoolExecutor

# idle executors kept per app: about the requests one context has in flight at once under
# load (wrk -c64 puts up to 64 there); more idle ones than this are shut down on return
MAX_IDLE = 64


class _Leased(ThreadPoolExecutor):
    """A one-thread executor that remembers the last work given to it: when that is done,
    so is everything before it (one thread, first in first out)."""

    def __init__(self):
        super().__init__(max_workers=1, thread_name_prefix="bunpy-asgiref")
        self.last = None
        self.broken = False

    def submit(self, fn, /, *args, **kwargs):
        try:
            f = super().submit(fn, *args, **kwargs)
        except BaseException:
            # its thread could not start (a sandbox's maxThreads): the work stays queued on
            # it, where it must never run (see release); the executor is not reused
            self.broken = True
            raise
        self.last = f
        return f


def _shut(ex):
    # cancel_futures: work queued on an executor whose thread never started never runs
    ex.shutdown(wait=False, cancel_futures=ex.broken)


class ThreadLeases:
    """One per app (on the app's record in bunpy._asgi: per context, no module state)."""

    __slots__ = ("s2a", "tsc", "idle", "closed")

    def __init__(self, s2a, tsc):
        self.s2a = s2a  # asgiref.sync.SyncToAsync
        self.tsc = tsc  # asgiref.sync.ThreadSensitiveContext
        self.idle = []
        self.closed = False

    @classmethod
    def for_app(cls):
        """Leases when asgiref is loaded (the app imported it) and has the hooks used here,
        else None (the app runs as it would anywhere)."""
        sync = sys.modules.get("asgiref.sync")
        if sync is None:
            return None
        s2a = getattr(sync, "SyncToAsync", None)
        tsc = getattr(sync, "ThreadSensitiveContext", None)
        if s2a is None or tsc is None:
            return None
        if not hasattr(s2a, "thread_sensitive_context") or not hasattr(s2a, "context_to_thread_executor"):
            return None
        return cls(s2a, tsc)

    def enter(self, ctx):
        """Gives the request that will run in `ctx` (a contextvars.Context) its own
        ThreadSensitiveContext and an executor. Returns the lease for `release`, or None
        when the context already has one (an app that set it itself)."""
        var = self.s2a.thread_sensitive_context
        if ctx.get(var) is not None:
            return None
        lease = self.tsc()
        ctx.run(var.set, lease)
        self.s2a.context_to_thread_executor[lease] = self.idle.pop() if self.idle else _Leased()
        return lease

    def release(self, lease):
        """The request is over: its executor goes back to the idle ones once the work given
        to it is done (a cancelled request's sync call may still be running: then it is
        shut down when that ends, and not reused)."""
        ex = self.s2a.context_to_thread_executor.pop(lease, None)
        if ex is None:
            return
        last = ex.last
        if last is not None and not last.done():
            last.add_done_callback(lambda _f: _shut(ex))
        elif self.closed or ex.broken or len(self.idle) >= MAX_IDLE:
            _shut(ex)
        else:
            ex.last = None
            self.idle.append(ex)

    def close(self):
        """The app is closing: its idle threads end (they wait for nothing, so the join is
        short); executors of requests still running end when they are released."""
        self.closed = True
        idle, self.idle = self.idle, []
        for ex in idle:
            ex.shutdown(wait=True)
