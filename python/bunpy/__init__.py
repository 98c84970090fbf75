"""bunpy: the Python side of the bridge to Bun.

Inside Python run by bunpy, ``import bunpy`` gives access to the JavaScript side:

    bunpy.call(name, *args, **kwargs)   call a JS function registered with py.register(name, fn)
                                        (from the main interpreter or any context)
    bunpy.send(channel, value)          deliver a value to the JS listeners of a channel (py.on)
    bunpy.JSError                       raised when a JS function throws
    bunpy.JSFunction                    the type of JS functions passed into Python
"""

from _bunpy import JSError, JSFunction, call, send

__all__ = ["call", "send", "JSError", "JSFunction"]
