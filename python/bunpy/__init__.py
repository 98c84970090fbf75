"""bunpy: the Python side of the bridge to Bun.

Inside Python run by bunpy, ``import bunpy`` gives access to the JavaScript side:

    bunpy.call(name, *args, **kwargs)   call a JS function registered with py.register(name, fn)
                                        (from the main interpreter or any context)
    await bunpy.async_call(name, ...)   the same without blocking the running asyncio loop
    bunpy.send(channel, value)          deliver a value to the JS listeners of a channel (py.on)
    bunpy.JSError                       raised when a JS function throws
    bunpy.JSFunction                    the type of JS functions passed into Python
"""

import _bunpy
from _bunpy import JSError, JSFunction, call, send

__all__ = ["call", "async_call", "send", "JSError", "JSFunction"]


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
