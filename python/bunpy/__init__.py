"""bunpy: the Python side of the bridge to Bun.

Inside Python run by bunpy, ``import bunpy`` gives access to the JavaScript side:

    bunpy.call(name, *args, **kwargs)   call a JS function registered with py.register(name, fn)
                                        (from the main interpreter or any context)
    await bunpy.async_call(name, ...)   the same without blocking the running asyncio loop
    bunpy.send(channel, value)          deliver a value to the JS listeners of a channel (py.on)
    bunpy.sleep(seconds)                sleep, cancellable from JS (awaitable inside a running loop)
    bunpy.run(coro)                     asyncio.run on bunpy's event loop
    bunpy.new_event_loop()              a new bunpy event loop (C reactor and timers)
    bunpy.EventLoopPolicy               an asyncio policy that makes bunpy loops
    bunpy.JSError                       raised when a JS function throws
    bunpy.Interrupted                   raised where JS interrupts a context's code (timeout,
                                        AbortSignal, close); a KeyboardInterrupt
    bunpy.JSFunction                    the type of JS functions passed into Python
    await bunpy.listen(factory, host, port)  loop.create_server with SO_REUSEPORT (one per context)
    bunpy.hand_off(transport, to, data) give a connection of a pool.listen listener to another context
"""

import sys

import _bunpy
from _bunpy import JSError, JSFunction, call, send

from ._shared import shared

__all__ = [
    "call", "async_call", "send", "sleep", "run", "new_event_loop", "EventLoopPolicy", "JSError", "JSFunction",
    "Interrupted", "listen", "hand_off", "shared",
]


class Interrupted(KeyboardInterrupt):
    """Raised inside a context's Python code when JS interrupts it: the call's timeout or
    AbortSignal, or the context's close(). A KeyboardInterrupt, so that `except Exception`
    (and asyncio, which logs and drops other exceptions raised in its callbacks) lets it
    through; it is raised again, less and less often, for as long as the interrupted call
    still runs."""

    def __init__(self, *args):
        super().__init__(*(args or ("bunpy: JS interrupted this code (a timeout, an AbortSignal or close())",)))


# asyncio takes a while to import: the loop module loads on first use
_LOOP_NAMES = ("run", "new_event_loop", "EventLoopPolicy", "BunpyEventLoop")


def __getattr__(name):
    if name in _LOOP_NAMES:
        from . import _loop

        return getattr(_loop, name)
    if name in ("listen", "hand_off"):
        from . import _listen

        return getattr(_listen, name)
    raise AttributeError(f"module 'bunpy' has no attribute {name!r}")


def sleep(seconds):
    """Sleeps for `seconds` with the GIL released.

    In synchronous code on a context, cancelling the JS call (timeout, AbortSignal) or
    closing the context ends the sleep with bunpy.Interrupted. Inside a
    running event loop it returns asyncio.sleep(seconds), to be awaited.
    """
    events = sys.modules.get("asyncio.events")
    if events is not None and events._get_running_loop() is not None:
        import asyncio

        return asyncio.sleep(seconds)
    return _bunpy.sleep(seconds)


async def async_call(name, *args, **kwargs):
    """Calls the JS function registered as `name` without blocking the running event loop.

    In a context the call goes to JS and the loop keeps running other tasks until the
    answer (an awaited Promise included) arrives. In the main interpreter JS is the caller
    and is waiting, so the call runs at once, like bunpy.call.
    """
    if not _bunpy.in_context():
        return call(name, *args, **kwargs)
    import asyncio

    loop = asyncio.get_running_loop()
    waiters = getattr(loop, "_bunpy_answers", None)
    if waiters is not None:
        # the context's own loop: one fd announces every answer (see bunpy._loop)
        handle, key = _bunpy.call_start_batched(name, *args, **kwargs)
        waiters[key] = answered = loop.create_future()
        try:
            await answered
        finally:
            waiters.pop(key, None)
        return _bunpy.call_finish(handle)
    # another loop (asyncio.run inside a call, say): an eventfd for this call
    handle, fd = _bunpy.call_start(name, *args, **kwargs)
    answered = loop.create_future()

    def on_answer():
        if not answered.done():
            answered.set_result(None)

    loop.add_reader(fd, on_answer)
    try:
        await answered
    finally:
        loop.remove_reader(fd)
    return _bunpy.call_finish(handle)
