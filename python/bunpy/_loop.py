"""bunpy's asyncio event loop: the stock selector loop on a C reactor (shim/reactor.c).

What changes against asyncio's own loop:
  * the selector is an epoll set in C whose wait releases the GIL with sub-millisecond
    precision, and whose wake-up (call_soon_threadsafe) is an eventfd written only when no
    wake-up is pending — no self-pipe;
  * timers live in a C heap compared by time, so scheduling one runs no Python comparisons;
  * the ready queue is run from C;
  * on a context's thread, requests from JS end the loop's wait: the context serves them
    between two iterations of its loop (shim/context.c), and coroutines returned to JS run
    on this loop as tasks.
Subprocesses are refused, and signal handlers outside contexts: Bun owns the process's
signals and its children. In a context, SIGINT/SIGTERM handlers (add_signal_handler, and
signal.signal through bunpy._signals) run on the context's thread (see docs/asyncio.md).
"""

import asyncio
import os
import selectors
import signal
import sys
import threading
from asyncio import base_events, coroutines, events, sslproto

import _bunpy

from bunpy import _connect
from bunpy._transport import SocketTransport as _SocketTransport

__all__ = ["BunpyEventLoop", "EventLoopPolicy", "new_event_loop", "run"]

_SOCK_STREAM = __import__("socket").SOCK_STREAM

_VALID_EVENTS = selectors.EVENT_READ | selectors.EVENT_WRITE
_C_CALLS = ("call_soon", "call_at", "call_later", "_timer_handle_cancelled")  # shim/loopcalls.c
_EAGER = sys.version_info >= (3, 12)  # asyncio.Task(eager_start=True)


class _ReactorSelector(selectors._BaseSelectorImpl):
    """A selectors.BaseSelector over the C reactor (level-triggered epoll)."""

    def __init__(self, context=False):
        super().__init__()
        # the reactor looks ready fds up in this selector's own fd -> key map
        self._reactor = _bunpy.Reactor(self._fd_to_key, context)

    def register(self, fileobj, events, data=None):
        key = super().register(fileobj, events, data)
        try:
            self._reactor.register(key.fd, events)
        except BaseException:
            super().unregister(fileobj)
            raise
        return key

    def unregister(self, fileobj):
        key = super().unregister(fileobj)
        self._reactor.unregister(key.fd)
        return key

    def modify(self, fileobj, events, data=None):
        try:
            key = self._fd_to_key[self._fileobj_lookup(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        changed = False
        if events != key.events:
            if not events or events & ~_VALID_EVENTS:
                raise ValueError(f"Invalid events: {events!r}")
            self._reactor.modify(key.fd, events)
            changed = True
        if data != key.data:
            changed = True
        if changed:
            key = key._replace(events=events, data=data)
            self._fd_to_key[key.fd] = key
        return key

    def select(self, timeout=None):
        return self._reactor.select(timeout)

    def fileno(self):
        return self._reactor.fileno()

    def close(self):
        self._reactor.close()
        super().close()


def _report_callback_error(handle, exc):
    """What Handle._run does when its callback raises (the handle ran from C)."""
    from asyncio import format_helpers

    cb = format_helpers._format_callback_source(handle._callback, handle._args)
    context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)


def _refused(what, why):
    return NotImplementedError(f"bunpy's event loop does not support {what}: {why}")


class BunpyEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on bunpy's C reactor; behaves like asyncio's selector loop."""

    def __init__(self, *, _context=False):
        selector = _ReactorSelector(_context)
        self._reactor = selector._reactor  # before the base class makes its "self-pipe"
        self._reactor_context = bool(_context)
        # stream transports in C (shim/transport.c); BUNPY_LOOP_TRANSPORTS=python, or this
        # attribute set to False, keeps asyncio's own (level-triggered) ones
        self._bunpy_c_transports = os.environ.get("BUNPY_LOOP_TRANSPORTS", "c") != "python"
        # BUNPY_LOOP_REGISTRATION=level: the C transports' fds registered level-triggered and
        # re-armed on every change of interest, as asyncio's are (to measure the difference)
        if os.environ.get("BUNPY_LOOP_REGISTRATION") == "level":
            selector._reactor.registration("level")
        # connecting and accepting without asyncio's tasks and futures (bunpy/_connect.py):
        # "c" accepts in the reactor (shim/accept.c), "python" in a reader callback, "stock"
        # keeps asyncio's own (BUNPY_LOOP_CONNECT, or this attribute, set on a new loop)
        self._bunpy_connect = os.environ.get("BUNPY_LOOP_CONNECT", "c")
        if self._bunpy_connect not in ("c", "python", "stock"):
            self._bunpy_connect = "c"
        self._bunpy_listening = {}  # fd -> Server, for the fds accepted from in C
        self._bunpy_own_methods = _connect.own_methods(type(self), BunpyEventLoop)
        self._bunpy_loop_signals = {}  # sig -> Handle (add_signal_handler)
        self._bunpy_signal_fd = None
        super().__init__(selector)
        self._scheduled = self._reactor  # the C timer heap stands where asyncio keeps its list
        self._reactor.configure(events.Handle, events.TimerHandle, _report_callback_error)
        self._bunpy_bind_calls()

    def _bunpy_bind_calls(self):
        """call_soon, call_at, call_later and _timer_handle_cancelled in C (shim/loopcalls.c),
        set on the instance where the class does not override them. They hand over to the
        Python methods in debug mode and once the loop is closed."""
        cls = type(self)
        calls = self._reactor.bind(self, self._ready, BunpyEventLoop.call_soon, BunpyEventLoop.call_at, cls.call_later)
        for name, fn in zip(_C_CALLS, calls):
            if getattr(cls, name) is getattr(BunpyEventLoop, name):
                setattr(self, name, fn)
        self._bunpy_calls_mode()

    def _bunpy_calls_mode(self):
        reactor = getattr(self, "_reactor", None)
        if reactor is not None:
            reactor.calls_mode(not self._debug and not self._closed, type(self).time is BunpyEventLoop.time)

    def set_debug(self, enabled):
        super().set_debug(enabled)
        self._c_iteration = not self._debug and type(self).time is BunpyEventLoop.time
        self._bunpy_calls_mode()

    def close(self):
        super().close()
        if self._closed:  # the Python methods from now on (they raise "Event loop is closed")
            for name in _C_CALLS:
                self.__dict__.pop(name, None)
            self._bunpy_calls_mode()

    # -- the self-pipe becomes the reactor's eventfd ------------------------------------
    def _make_self_pipe(self):
        self._ssock = self._csock = None
        self._internal_fds += 1  # the eventfd, counted as asyncio counts its self-pipe

    def _close_self_pipe(self):
        self._internal_fds -= 1

    def _write_to_self(self):
        reactor = getattr(self, "_reactor", None)
        if reactor is not None:
            reactor.wake()

    # -- stream transports in C ------------------------------------------------------------
    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        if not self._bunpy_c_transports or sock.type != _SOCK_STREAM:
            return super()._make_socket_transport(sock, protocol, waiter, extra=extra, server=server)
        self._ensure_fd_no_transport(sock)
        return _SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(
        self, rawsock, protocol, sslcontext, waiter=None, *, server_side=False, server_hostname=None,
        extra=None, server=None, ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
    ):
        if not self._bunpy_c_transports or rawsock.type != _SOCK_STREAM:
            return super()._make_ssl_transport(
                rawsock, protocol, sslcontext, waiter, server_side=server_side, server_hostname=server_hostname,
                extra=extra, server=server, ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
            )
        self._ensure_fd_no_transport(rawsock)
        kwargs = {"ssl_shutdown_timeout": ssl_shutdown_timeout} if sys.version_info >= (3, 11) else {}
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout, **kwargs,
        )
        _SocketTransport(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    # -- connecting and accepting without a Task per connection (bunpy/_connect.py) ---------
    def _start_serving(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *args):
        if self._bunpy_connect == "c" and self._bunpy_c_transports and not sslcontext and _connect.plain_stream(self, sock):
            return _connect.start_accepting(self, protocol_factory, sock, server, backlog)
        return super()._start_serving(protocol_factory, sock, sslcontext, server, backlog, *args)

    def _stop_serving(self, sock):
        if not _connect.stop_accepting(self, sock):
            super()._stop_serving(sock)

    def _accept_connection(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *args):
        if self._bunpy_connect == "stock" or not self._bunpy_c_transports or sslcontext or not _connect.plain_stream(self, sock):
            return super()._accept_connection(protocol_factory, sock, sslcontext, server, backlog, *args)
        _connect.accept_connections(self, protocol_factory, sock, server, backlog)

    async def create_connection(self, protocol_factory, host=None, port=None, **kwargs):
        fast = self._bunpy_connect != "stock" and self._bunpy_c_transports and _connect.fast_address(self, host, port, kwargs)
        if not fast:
            return await super().create_connection(protocol_factory, host, port, **kwargs)
        return await _connect.create_connection(self, protocol_factory, *fast)

    # -- call_soon: the Handle is made in C ---------------------------------------------
    # Debug mode keeps asyncio's two levels, each trimming its own frame from the handle's
    # _source_traceback (through super() a frame of ours would stay in it).
    def call_soon(self, callback, *args, context=None):
        if not (self._debug or self._closed):
            return self._reactor.soon(events.Handle, callback, args, context, self, self._ready)
        self._check_closed()
        self._check_thread()
        self._check_callback(callback, "call_soon")
        handle = self._call_soon(callback, args, context)
        if handle._source_traceback:
            del handle._source_traceback[-1]
        return handle

    def _call_soon(self, callback, args, context):
        if not self._debug:
            return self._reactor.soon(events.Handle, callback, args, context, self, self._ready)
        handle = events.Handle(callback, args, self, context)
        if handle._source_traceback:
            del handle._source_traceback[-1]
        self._ready.append(handle)
        return handle

    # -- timers in the C heap -----------------------------------------------------------
    def call_at(self, when, callback, *args, context=None):
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        timer = events.TimerHandle(when, callback, args, self, context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        self._reactor.push(timer)
        return timer

    def _timer_handle_cancelled(self, handle):
        if handle._scheduled:
            self._reactor.cancelled()

    def _run_once(self):
        if self._c_iteration:
            self._reactor.run_once(self, self._ready, self._stopping, self._clock_resolution)
            return
        # debug mode, or a subclass with its own clock: the same steps, from Python
        reactor = self._reactor
        ready = self._ready
        timeout = 0 if ready or self._stopping else reactor.timeout(self.time())
        event_list = self._selector.select(timeout)
        if event_list:
            self._process_events(event_list)
        event_list = None  # breaks cycles when an exception occurs
        reactor.pop_due(self.time() + self._clock_resolution, ready.append)
        if self._debug:
            self._run_ready_debug()
        else:
            reactor.run_ready(ready)
        reactor.run_transports()  # C transports, after the handles (as run_once does)

    def _run_ready_debug(self):
        # as asyncio's loop in debug mode: time every callback, warn about slow ones
        for _ in range(len(self._ready)):
            handle = self._ready.popleft()
            if handle._cancelled:
                continue
            try:
                self._current_handle = handle
                t0 = self.time()
                handle._run()
                dt = self.time() - t0
                if dt >= self.slow_callback_duration:
                    base_events.logger.warning("Executing %s took %.3f seconds", base_events._format_handle(handle), dt)
            finally:
                self._current_handle = None

    # -- signal handlers: SIGINT and SIGTERM, on a context's own loop --------------------
    def add_signal_handler(self, sig, callback, *args):
        self._bunpy_check_signal(sig)
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_closed()
        self._bunpy_loop_signals[sig] = events.Handle(callback, args, self, None)
        self._bunpy_signals_update()

    def remove_signal_handler(self, sig):
        self._bunpy_check_signal(sig)
        removed = self._bunpy_loop_signals.pop(sig, None) is not None
        if removed and not self.is_closed():
            self._bunpy_signals_update()
        return removed

    def _bunpy_check_signal(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")
        if not self._reactor_context:
            raise _refused(
                "signal handlers outside a context",
                "Bun owns the process's signals; listen with process.on() in JS",
            )
        if sig not in _SIG_BITS:
            raise _refused(
                f"a handler for signal {sig}", "a context's loop can handle SIGINT and SIGTERM only"
            )

    def _bunpy_signals_update(self):
        """Subscribes this (context) loop to the signals it has handlers for."""
        wanted = _context_signals()
        mask = 0
        for sig, bit in _SIG_BITS.items():
            if sig in self._bunpy_loop_signals or _runs(wanted.get(sig)):
                mask |= bit
        if not mask and self._bunpy_signal_fd is None:
            return
        fd = self._reactor.signals(mask)
        if self._bunpy_signal_fd is None:
            self._bunpy_signal_fd = fd
            self._add_reader(fd, self._bunpy_signals_arrived)

    def _bunpy_signals_arrived(self):
        arrived = self._reactor.take_signals()
        for sig, bit in _SIG_BITS.items():
            if arrived & bit:
                deliver_context_signal(sig, loop_handlers=True, loop=self)

    # -- refused --------------------------------------------------------------------------

    async def _make_subprocess_transport(self, *args, **kwargs):
        raise _refused("subprocesses", "start them from JS with Bun.spawn, or call subprocess.run in a thread")

    # -- a context's own loop, driven by the context thread ------------------------------
    def _bunpy_step(self):
        """One iteration of a context's loop (called from C between requests)."""
        events._set_running_loop(self)
        try:
            self._run_once()
        finally:
            events._set_running_loop(None)
            self._stopping = False  # a context's loop runs for the context's whole life

    def _bunpy_start(self, awaitable, token):
        """Runs what a JS call returned as a task; its end completes the call.

        A coroutine starts eagerly (3.12+, as asyncio.eager_task_factory does): its first
        step runs now, and one that finishes without waiting completes the call at once,
        with no trip through the loop. Returns the task; the caller checks done()."""
        if _EAGER and asyncio.iscoroutine(awaitable):
            outer = events._get_running_loop()  # set when JS called back from inside a task
            events._set_running_loop(self)
            try:
                task = asyncio.Task(awaitable, loop=self, eager_start=True)
            finally:
                events._set_running_loop(outer)
        else:
            task = asyncio.ensure_future(awaitable, loop=self)
        if not task.done():
            task.add_done_callback(lambda t: _bunpy.finish_parked(token, t))
        return task


class _Local(events.BaseDefaultEventLoopPolicy._Local):
    """A policy's per-thread state: on a context's thread with no loop set, the loop is the
    context's own. (Not an override of get_event_loop: a frame of ours there would shift the
    stacklevel of asyncio's "There is no current event loop" DeprecationWarning.)"""

    _set = None

    @property
    def _loop(self):
        if self._set is None and _bunpy.in_context():
            return context_loop()
        return self._set

    @_loop.setter
    def _loop(self, loop):
        self._set = loop


class _ContextLoopLocal:
    """Policy mixin: its per-thread state is a _Local."""

    def __init__(self):
        super().__init__()
        self._local = _Local()


class EventLoopPolicy(_ContextLoopLocal, events.BaseDefaultEventLoopPolicy):
    """asyncio's policy, making bunpy loops; on a context's thread get_event_loop() gives
    the context's own loop (its tasks keep running between calls from JS)."""

    _loop_factory = BunpyEventLoop


class ContextsPolicy(_ContextLoopLocal, asyncio.DefaultEventLoopPolicy):
    """The policy bunpy installs in an interpreter that runs contexts: bunpy loops on
    context threads, asyncio's own everywhere else (worker contexts share the main
    interpreter, whose asyncio code must not change)."""

    def new_event_loop(self):
        return BunpyEventLoop() if _bunpy.in_context() else super().new_event_loop()


def install_contexts_policy():
    """Called once asyncio is imported in an interpreter running contexts."""
    if events._event_loop_policy is None:
        events.set_event_loop_policy(ContextsPolicy())


def new_event_loop():
    """A new bunpy event loop (asyncio.AbstractEventLoop)."""
    return BunpyEventLoop()


def run(main, *, debug=None):
    """asyncio.run(main) on a new bunpy event loop."""
    with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
        return runner.run(main)


# per thread: worker contexts are threads of one interpreter
_this_thread = threading.local()


def context_loop():
    """The loop of the context this thread runs (created on first use)."""
    loop = getattr(_this_thread, "loop", None)
    if loop is None:
        if not _bunpy.in_context():
            raise RuntimeError("bunpy: not on a context's thread")
        loop = BunpyEventLoop(_context=True)
        loop._thread_id = threading.get_ident()  # running for the thread's whole life
        # answers to bunpy.async_call: one fd (an eventfd, or a pipe in a sandboxed context), watched for the loop's whole life
        loop._bunpy_answers = {}
        loop._add_reader(_bunpy.answers_fd(), _deliver_answers, loop)
        sys.set_asyncgen_hooks(firstiter=loop._asyncgen_firstiter_hook, finalizer=loop._asyncgen_finalizer_hook)
        _this_thread.loop = loop
    return loop


def _deliver_answers(loop):
    waiters = loop._bunpy_answers
    for key in _bunpy.take_answers():
        answered = waiters.pop(key, None)
        if answered is not None and not answered.done():
            answered.set_result(None)


def close_context_loop(budget=1.0):
    """At a context's close: run its SIGTERM (else SIGINT) handler and give its tasks up to
    `budget` seconds to finish on their own, if it has one; cancel its tasks, let them
    unwind (up to `budget` seconds), finish async generators, close its transports and
    servers, close the loop. The fds are released here, not when the garbage collector gets
    to them (in a worker context that is the main interpreter's collector, which may run
    much later)."""
    loop = getattr(_this_thread, "loop", None)
    _this_thread.loop = None
    if loop is None or loop.is_closed():
        return
    _this_thread.closing = loop  # signal.signal during the close must not make a new loop
    tasks = []
    try:
        if not _reactor_closed(loop):
            _stop_gracefully(loop, budget)
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            deadline = loop.time() + budget
            loop.call_at(deadline, lambda: None)  # no iteration waits past the budget
            agens = loop.create_task(loop.shutdown_asyncgens()) if loop._asyncgens else None
            while loop.time() < deadline and (any(not t.done() for t in tasks) or (agens and not agens.done())):
                loop._bunpy_step()
            _close_transports(loop)
    finally:
        # also when the close watchdog interrupted the steps above
        _retrieve_interrupts(tasks)
        _drop_sockets(loop)
        loop._thread_id = None
        sys.set_asyncgen_hooks(None, None)
        _this_thread.closing = None
        _this_thread.signals = None
        loop.close()


def _reactor_closed(loop):
    """Code that reached the loop's private reactor closed it: nothing can run on the loop
    any more (every later coroutine call said so), so its tasks are dropped, not unwound."""
    try:
        loop._reactor.fileno()
    except RuntimeError:
        return True
    return False


# -- SIGINT / SIGTERM in contexts (signal.signal is patched by bunpy._signals) --------------

_SIG_BITS = {int(signal.SIGINT): 1, int(signal.SIGTERM): 2}  # BP_SIG_INT, BP_SIG_TERM in shim/reactor.h


def _runs(handler):
    """A signal.signal handler that bunpy runs (not SIG_IGN, SIG_DFL or the default)."""
    return callable(handler) and handler is not signal.default_int_handler


def _context_signals():
    """This context's signal.signal handlers: {sig: handler}, defaults left out."""
    table = getattr(_this_thread, "signals", None)
    if table is None:
        table = _this_thread.signals = {}
    return table


def _this_loop(create):
    loop = getattr(_this_thread, "loop", None) or getattr(_this_thread, "closing", None)
    if loop is None and create:
        loop = context_loop()
    return loop


def set_context_signal(sig, handler, default):
    """signal.signal(sig, handler) in a context: returns the previous handler."""
    table = _context_signals()
    previous = table.get(sig, default)
    if handler is default:
        table.pop(sig, None)
    else:
        table[sig] = handler
    # the context's loop runs the handler: make it now if code sets one before any asyncio
    loop = _this_loop(create=_runs(handler))
    if loop is not None and not loop.is_closed():
        loop._bunpy_signals_update()
    return previous


def context_signal(sig, default):
    """signal.getsignal(sig) in a context."""
    return _context_signals().get(sig, default)


def deliver_context_signal(sig, loop_handlers, loop=None):
    """Runs this context's handlers for `sig`: signal.signal's at once (with frame None),
    add_signal_handler's from the loop's queue."""
    if loop_handlers:
        loop = loop or _this_loop(create=False)
        handle = loop._bunpy_loop_signals.get(sig) if loop is not None else None
        if handle is not None and not handle._cancelled:
            loop._ready.append(handle)
    handler = _context_signals().get(sig)
    if _runs(handler):
        handler(sig, None)


def _stop_gracefully(loop, budget):
    """At close: a context that handles SIGTERM (else SIGINT) gets it, as a process would,
    and its tasks get `budget` seconds to finish before they are cancelled."""
    table = _context_signals()
    for sig in (signal.SIGTERM, signal.SIGINT):
        if sig in loop._bunpy_loop_signals or _runs(table.get(sig)):
            break
    else:
        return
    try:
        deliver_context_signal(sig, loop_handlers=True, loop=loop)
    except Exception as exc:
        loop.call_exception_handler({"message": f"Exception in the handler of signal {sig} at the context's close", "exception": exc})
    deadline = loop.time() + budget
    loop.call_at(deadline, lambda: None)  # no iteration waits past the budget
    while loop.time() < deadline and any(not t.done() for t in asyncio.all_tasks(loop)):
        loop._bunpy_step()


def _retrieve_interrupts(tasks):
    """Tasks the close watchdog ended with bunpy.Interrupted: nobody will ask for their
    exception, and asyncio would log each as "never retrieved". (Reading the exception marks
    it retrieved, whatever it is: a task that ended with another error during the close is
    not logged either.)"""
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()


def _close_transports(loop):
    """Aborts the loop's transports and stops its servers, then lets their connection_lost
    callbacks run (they close the sockets)."""
    for transport in list(loop._transports.values()):
        try:
            transport.abort() if hasattr(transport, "abort") else transport.close()
        except Exception:
            pass
    for server in _servers(loop):
        try:
            server.close()
        except Exception:
            pass
    for _ in range(3):
        if not loop._ready:
            break
        loop._bunpy_step()


def _servers(loop):
    """The asyncio Servers accepting on this loop (found through their accept readers, and
    the listening fds accepted from in C)."""
    found = [s for s in dict.fromkeys(getattr(loop, "_bunpy_listening", {}).values()) if s is not None]
    accept = base_events_selector_accept()
    for key in list(loop._selector.get_map().values()):
        for handle in key.data if isinstance(key.data, tuple) else ():
            callback = getattr(handle, "_callback", None)
            if getattr(callback, "__func__", None) in accept and len(handle._args) > 3:
                server = handle._args[3]
                if server is not None and server not in found:
                    found.append(server)
    return found


def base_events_selector_accept():
    from asyncio import selector_events

    return (selector_events.BaseSelectorEventLoop._accept_connection, BunpyEventLoop._accept_connection)


def _drop_sockets(loop):
    """Closes the sockets of transports whose connection_lost did not run (the watchdog cut
    the close short, or a callback failed)."""
    for transport in list(loop._transports.values()):
        sock = getattr(transport, "_sock", None)
        if sock is None or sock.fileno() < 0:
            continue
        core = getattr(transport, "_core", None)
        if core is not None:  # a C transport: its fd leaves the epoll set first
            core._stop()
        try:
            loop._selector.unregister(sock)
        except Exception:
            pass
        try:
            sock.close()
        except Exception:
            pass


# asyncio was first imported by this module, in an interpreter running contexts
if getattr(sys.modules.get("bunpy._context"), "policy_pending", False):
    install_contexts_policy()
