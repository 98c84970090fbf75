"""Which interface a web app speaks (ASGI 3, ASGI 2 or WSGI), and ASGI 2 apps served as
ASGI 3 ones (used by bunpy._asgi.load)."""

import inspect


def _positional(obj):
    """How many positional parameters `obj` takes (None: unknown, or *args)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    n = 0
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return n


def detect(obj):
    """See _detect; an app whose introspection raises (a `__signature__` or `__call__` that
    raises, a metaclass's `__getattr__`) is one bunpy cannot tell: TypeError saying so."""
    try:
        return _detect(obj)
    except Exception as e:
        try:
            name = f"{obj!r:.100}"
        except Exception:  # its repr raises too
            name = f"a {type(obj).__name__} object"
        raise TypeError(
            f"bunpy: cannot tell which interface {name} speaks (looking at it raised "
            f"{type(e).__name__}: {e}); say it with interface: \"asgi3\", \"asgi2\" or \"wsgi\""
        ) from e


def _detect(obj):
    """"asgi3", "asgi2", "wsgi" or None (cannot tell) for an app object.

    As uvicorn tells ASGI 3 from ASGI 2: a class is ASGI 3 when its instances are awaitable
    (`App(scope, receive, send)` then is the coroutine), else ASGI 2 (`App(scope)` makes
    the instance whose `await instance(receive, send)` runs); a function or an object is
    ASGI 3 when it (its `__call__`) is a coroutine function. uvicorn takes every other
    callable for ASGI 2; here WSGI is possible too, so the parameters decide: one
    (`scope`) is ASGI 2, two (`environ, start_response`) WSGI, three a synchronous callable
    that returns the ASGI 3 coroutine."""
    if inspect.isclass(obj):
        if hasattr(obj, "__await__"):
            return "asgi3"
        return "wsgi" if _positional(obj) == 2 else "asgi2"  # PEP 3333's iterable class
    if inspect.iscoroutinefunction(obj):
        return "asgi3"
    call = getattr(obj, "__call__", None)
    if call is not None and inspect.iscoroutinefunction(call):
        return "asgi3"
    return {1: "asgi2", 2: "wsgi", 3: "asgi3"}.get(_positional(obj))


def asgi2_as_asgi3(app):
    """An ASGI 2 app (two callables) as an ASGI 3 one: `app(scope)` makes the instance,
    `await instance(receive, send)` runs it."""

    async def asgi3(scope, receive, send):
        instance = app(scope)
        await instance(receive, send)

    return asgi3
