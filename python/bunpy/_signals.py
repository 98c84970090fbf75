"""signal.signal / getsignal / raise_signal for SIGINT and SIGTERM in contexts.

Python lets only the main thread of the main interpreter install signal handlers: in a
context, signal.signal raises "signal only works in main thread of the main interpreter",
and servers written for the main thread (uvicorn, CLIs) fail at once. In a context, bunpy's
versions keep a handler per context instead and subscribe the context's event loop to the
signal (shim/loop.c): when the process gets it, the handler runs on the context's thread
(from its loop), and closing the context runs its SIGTERM handler (else its SIGINT one)
before the loop's tasks are cancelled. Other signals, and code outside contexts, get the
standard functions' behaviour.

Installed in every context (bunpy._context.setup) when `signal` is imported; in worker
contexts the main interpreter's module is patched once, and the patched functions tell
contexts from the rest by the calling thread.
"""

import sys

import _bunpy

_PATCHED = "_bunpy_patched"


def install():
    from bunpy._context import when_imported

    when_imported("signal", _patch)


def _patch(mod):
    if getattr(mod, _PATCHED, False):
        return
    SIGINT, SIGTERM = mod.SIGINT, mod.SIGTERM
    handled = (SIGINT, SIGTERM)
    original_signal, original_getsignal, original_raise = mod.signal, mod.getsignal, mod.raise_signal

    def default(sig):
        return mod.default_int_handler if sig == SIGINT else mod.Handlers.SIG_DFL

    def signal(signalnum, handler):
        if signalnum in handled and _bunpy.in_context():
            if not (callable(handler) or handler in (mod.SIG_IGN, mod.SIG_DFL)):
                raise TypeError("signal handler must be signal.SIG_IGN, signal.SIG_DFL, or a callable object")
            from bunpy import _loop

            return _loop.set_context_signal(int(signalnum), handler, default(signalnum))
        return original_signal(signalnum, handler)

    def getsignal(signalnum):
        if signalnum in handled and _bunpy.in_context():
            from bunpy import _loop

            return _loop.context_signal(int(signalnum), default(signalnum))
        return original_getsignal(signalnum)

    def raise_signal(signalnum):
        if signalnum in handled and _bunpy.in_context():
            # the process is not the context's to signal: its own handlers run, here and now
            from bunpy import _loop

            handler = _loop.context_signal(int(signalnum), default(signalnum))
            _loop.deliver_context_signal(int(signalnum), loop_handlers=True)
            if handler is mod.default_int_handler:
                raise KeyboardInterrupt
            return None
        return original_raise(signalnum)

    for fn, orig in ((signal, original_signal), (getsignal, original_getsignal), (raise_signal, original_raise)):
        fn.__name__, fn.__qualname__, fn.__doc__, fn.__wrapped__ = orig.__name__, orig.__qualname__, orig.__doc__, orig
    mod.signal, mod.getsignal, mod.raise_signal = signal, getsignal, raise_signal
    setattr(mod, _PATCHED, True)
