"""Inline serving: coroutines of the main interpreter driven from Bun's own thread
(the JS half is src/inline.ts; ASGI uses it for `mode: "inline"`).

`start(fn, args)` calls a function synchronously. When it returns a coroutine, the
coroutine's first step runs at once, with the inline loop set as the running loop: one that
finishes without waiting (most ASGI requests) gives its value in the same call, with no task
and no loop iteration. One that waits goes on as a task on the inline loop, a bunpy event
loop that never runs by itself: JS runs it one iteration at a time (`pump`) when it has work
(ready callbacks, a due timer, an fd event, a wake-up from another thread), and takes the
results of the tasks that ended in the same call.

Wake-ups: `call_soon_threadsafe` from another thread (asgiref's executor threads, say)
sends one message to the JS thread (`_bunpy.port_send`); fds registered on the loop are
watched by a helper thread that does the same when the loop's epoll set becomes ready.
"""

import asyncio
import sys
import threading
from asyncio import events

import _bunpy

from bunpy._asgi import _continue, _state as _asgi_state, handle as _asgi_handle
from bunpy._loop import BunpyEventLoop

WAKE = "__bunpy_inline_wake"
_ASYNC_JS = "__bunpy_inline_async"  # JS: starts a registered async JS function (see async_call)
_MAX_STEPS = 64
_EAGER = sys.version_info >= (3, 12)  # loop iterations per pump while callbacks keep becoming ready


class InlineLoop(BunpyEventLoop):
    """The inline loop: a bunpy loop that JS runs one iteration at a time on its own thread."""

    def __init__(self, port):
        self._bunpy_js_thread = threading.get_ident()
        self._bunpy_port = port
        super().__init__()
        # "Running" for its whole life on the JS thread, as a context's loop is: asyncio
        # (3.12+) starts a task eagerly only on a running loop, and without this every
        # request went through a pump, the first step never ran in the FFI call
        self._thread_id = self._bunpy_js_thread
        self._bunpy_wake_sent = False  # a wake message is on its way to JS (not pumped yet)
        self._bunpy_watcher = None
        self._bunpy_pumped = threading.Event()
        self._bunpy_stop_watch = None
        # asyncio's Python transports: their fds go through the selector, where the watcher
        # thread learns that it is needed
        self._bunpy_c_transports = False
        sel = self._selector
        register = sel.register

        def watched_register(fileobj, events_, data=None):
            self._bunpy_watch()
            return register(fileobj, events_, data)

        sel.register = watched_register

    def _write_to_self(self):
        super()._write_to_self()
        if threading.get_ident() != self._bunpy_js_thread:
            self._bunpy_ring()

    def _bunpy_ring(self):
        if self._bunpy_wake_sent or self._closed:
            return
        self._bunpy_wake_sent = True
        try:
            _bunpy.port_send(self._bunpy_port, WAKE, None)
        except Exception:
            self._bunpy_wake_sent = False  # the JS thread is gone

    def _bunpy_watch(self):
        if self._bunpy_watcher is not None:
            return
        import os

        r, w = os.pipe()
        self._bunpy_stop_watch = w
        self._bunpy_pumped.set()
        t = threading.Thread(target=_watch, args=(self, r), name="bunpy-inline-watch", daemon=True)
        self._bunpy_watcher = t
        t.start()

    def close(self):
        self._thread_id = None  # asyncio refuses to close a running loop
        w = self._bunpy_stop_watch
        if w is not None:
            import os

            self._bunpy_stop_watch = None
            os.write(w, b"x")
            self._bunpy_pumped.set()
            self._bunpy_watcher.join()
            os.close(w)
        super().close()


def _watch(loop, stop):
    """The watcher thread: when the loop's epoll set has events, asks JS for a pump and
    waits until it ran (level-triggered: what is still ready after it is seen again)."""
    import os
    import select

    p = select.poll()
    p.register(loop._reactor.fileno(), select.POLLIN)
    p.register(stop, select.POLLIN)
    try:
        while True:
            loop._bunpy_pumped.wait()
            if loop._bunpy_stop_watch is None:
                return
            ready = p.poll()
            if any(fd == stop for fd, _ in ready):
                return
            loop._bunpy_pumped.clear()
            loop._bunpy_ring()
    finally:
        os.close(stop)


# per JS thread (each Bun Worker has its own inline loop)
_tl = threading.local()


def _loop():
    loop = getattr(_tl, "loop", None)
    if loop is None or loop.is_closed():
        loop = _tl.loop = InlineLoop(_bunpy.port())
        _tl.tasks = {}
        _tl.finished = []
        _tl.next = 1
        _tl.fns = {}
    return loop


def _fn(module, name):
    fns = _tl.fns
    f = fns.get((module, name))
    if f is None:
        __import__(module)
        f = fns[(module, name)] = getattr(sys.modules[module], name)
    return f


def start(module, name, args):
    """Calls module.name(*args). Returns [0, value, pump] when it is done, [1, token, pump]
    when it goes on as a task (its end comes back from pump()); `pump`: the loop has
    callbacks ready. A coroutine runs as a task, started eagerly (its first step now)."""
    loop = _loop()
    outer = events._get_running_loop()
    events._set_running_loop(loop)
    try:
        value = _fn(module, name)(*args)
        if not asyncio.iscoroutine(value):
            return [0, value, bool(loop._ready)]
        task = _eager_task(loop, value)
        if task.done():
            return [0, task.result(), bool(loop._ready)]  # or raises its error
    finally:
        events._set_running_loop(outer)
    token = _tl.next
    _tl.next = token + 1
    _tl.tasks[token] = task
    task.add_done_callback(lambda t, token=token: _tl.finished.append(token))
    return [1, token, True]


def handle(sticky, *args):
    """An ASGI request (bunpy._asgi.handle's arguments), inline: the response record when the
    app finished its first step, else a token (its end comes back from pump()).

    The inline loop stays this thread's running loop after the call ("sticky": setting it
    costs two getpid() system calls on 3.11); JS puts the previous one back with unstick()
    before any other call into the main interpreter and at the end of its event loop turn.
    `sticky`: it is still set from the previous request."""
    loop = _tl.loop if getattr(_tl, "loop", None) is not None else _loop()
    if not sticky:
        _tl.outer = events._get_running_loop()
        events._set_running_loop(loop)
    # as in a context, the app's first step runs inside a task (libraries such as anyio
    # ask asyncio.current_task() which event loop library runs them), started eagerly
    task = _eager_task(loop, _asgi_handle(*args))
    if task.done():
        return task.result()
    token = _tl.next
    _tl.next = token + 1
    _tl.tasks[token] = task
    task.add_done_callback(lambda t, token=token: _tl.finished.append(token))
    return token


def _eager_task(loop, coro):
    """A task for `coro` whose first step has run already (a task that finished in it is
    done on return). 3.12+: asyncio's eager start; 3.11: the task's first step, which its
    constructor queued on the loop, is taken back from the ready queue and run now."""
    if _EAGER:
        return asyncio.Task(coro, loop=loop, eager_start=True)
    task = asyncio.Task(coro, loop=loop)
    ready = loop._ready
    if asyncio.current_task(loop) is not None:
        # called from inside another task's step (the app called JS, which served another
        # inline request): asyncio refuses to enter a task while one runs, and the step
        # run here would fail and leave the task pending forever; the loop runs it next
        return task
    if ready:
        step = ready.pop()
        if getattr(step, "_callback", None) is not None and getattr(step._callback, "__self__", None) is task:
            step._run()
        else:
            ready.append(step)  # not the task's step (a subclass of Task?): leave it to the loop
    return task


def unstick():
    """Puts back the running loop handle() found (see handle)."""
    events._set_running_loop(getattr(_tl, "outer", None))
    _tl.outer = None


def pump():
    """Runs the loop until nothing is ready (at most _MAX_STEPS iterations). Returns
    [delay, token, ok, value, token, ok, value...]: the tasks that ended (ok False: value
    is None, the error comes from error(token)) and when to pump next: 0 now, > 0 in that
    many seconds (a timer), -1 when only a wake-up or a call from JS can bring work."""
    loop = _loop()
    loop._bunpy_wake_sent = False
    outer = events._get_running_loop()
    events._set_running_loop(loop)
    try:
        for _ in range(_MAX_STEPS):
            loop._stopping = True  # one iteration that does not wait
            try:
                loop._run_once()
            except (SystemExit, KeyboardInterrupt) as e:
                # asyncio lets these two out of a callback; as in a context (shim/loop.c)
                # they end only the task they came out of (its request fails, its error
                # kept on it), and the loop goes on. Raised out of pump(), the task's end
                # was never taken and its request waited for ever.
                loop.call_exception_handler({"message": "bunpy: an inline task raised " + type(e).__name__, "exception": e})
            finally:
                loop._stopping = False
            if not loop._ready:
                break
    finally:
        events._set_running_loop(outer)
        loop._bunpy_pumped.set()
    if loop._ready:
        delay = 0
    else:
        t = loop._reactor.timeout(loop.time())
        delay = -1 if t is None else max(t, 0.0001)
    out = [delay]
    finished = _tl.finished
    if finished:
        tasks = _tl.tasks
        for token in finished:
            task = tasks.get(token)
            if task is None:
                continue
            if task.cancelled() or task.exception() is not None:
                out += (token, False, None)
            else:
                del tasks[token]
                out += (token, True, task.result())
        finished.clear()
    return out


def error(token):
    """Raises the error of a task that ended with one (pump said ok False)."""
    task = _tl.tasks.pop(token)
    if task.cancelled():
        raise asyncio.CancelledError("bunpy: the inline task was cancelled")
    raise task.exception()


async def async_call(name, *args):
    """`await` a registered JS function that returns a Promise, from the inline loop: JS
    starts it and settles the future from its Promise (settle())."""
    loop = events.get_running_loop()
    fut = loop.create_future()
    key = _tl.next
    _tl.next = key + 1
    _tl.tasks[-key] = fut
    try:
        import bunpy

        bunpy.call(_ASYNC_JS, key, name, *args)
        return await fut
    finally:
        _tl.tasks.pop(-key, None)


def settle(key, ok, value):
    """JS: the Promise of async_call(key) settled."""
    fut = _tl.tasks.get(-key)
    if fut is None or fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(RuntimeError(f"bunpy: the JS function failed: {value}"))


def close():
    """JS: no inline app is left on this thread (they closed, past their timeout); the
    loop is closed (a new one is made on next use). Tasks still running are cancelled and
    given a few loop iterations to end (their finally blocks run): left alone, they and
    their requests stayed for ever. Returns the tokens that were still running (JS fails
    their calls)."""
    loop = getattr(_tl, "loop", None)
    if loop is None or loop.is_closed():
        return []
    tasks = _tl.tasks
    left = [k for k, t in tasks.items() if k > 0 and not t.done()]
    # every task on the loop (an app that suspended goes on in a task of its own), and
    # the futures of async_call
    running = [t for t in asyncio.all_tasks(loop)] + list(tasks.values())
    for t in running:
        t.cancel()
    for _ in range(_MAX_STEPS):
        if all(t.done() for t in running):
            break
        pump()
    for t in running:
        if t.done() and not t.cancelled():
            t.exception()  # retrieved: no "exception was never retrieved" at collection
    tasks.clear()
    _tl.finished.clear()
    # the requests those tasks served: JS fails their calls and never asks for them again
    # (in a context they go with its interpreter; here the main interpreter stays)
    _asgi_state()[1].clear()
    loop.close()
    _tl.loop = None
    return left
