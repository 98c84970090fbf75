"""ASGI 3.0 on Bun.serve: the Python half (the JS half is src/asgi.ts).

Runs on each context's event loop. One call per request, `handle`, starts the app as a
task and returns as soon as the response is complete (the common case: one call in all)
or, for a streamed response, once its first chunk is there; JS then pulls the rest with
`pull`. Request bodies larger than what JS sent along are read from JS with
`bunpy.async_call("__bunpy_asgi_read", rid)`, one chunk per receive(): back-pressure.
Websockets are in bunpy._asgi_ws.
"""

import asyncio
import contextvars
import sys
import types
from urllib.parse import unquote

import _bunpy
import bunpy
from bunpy._asgiref_threads import ThreadLeases
from bunpy._interfaces import asgi2_as_asgi3, detect

_ASGI = {"version": "3.0", "spec_version": "2.4"}
_ASGI2 = {"version": "2.0", "spec_version": "2.4"}
# the ASGI extensions served: file responses by path (Bun sends the file), and an HTTP
# response instead of a websocket (the denial response). Trailers are not: Bun's Response
# has none to send.
_HTTP_EXTENSIONS = {"http.response.pathsend": {}}
DONE, STREAM, PATHSEND = 0, 1, 2
_HIGH_WATER = 65536  # bytes a streamed response may queue before send() waits for JS

import threading

# Per context thread: worker contexts share the main interpreter's modules, so module
# globals would be shared between contexts (and Bun Workers, whose ids may collide).
_tl = threading.local()


def _state():
    """(apps by id, requests by id) of the calling context."""
    try:
        return _tl.s
    except AttributeError:
        s = _tl.s = ({}, {})
        return s


class _App:
    __slots__ = ("app", "kind", "asgi", "state", "lifespan", "lifespan_queue", "lifespan_done", "tasks", "extensions", "leases")

    def __init__(self, app, sandboxed, kind):
        self.kind = kind  # "asgi3", "asgi2" (app is then wrapped: see asgi2_as_asgi3) or "wsgi"
        self.app = asgi2_as_asgi3(app) if kind == "asgi2" else app
        # the scope's "asgi" key says which interface the app has (as uvicorn does)
        self.asgi = _ASGI2 if kind == "asgi2" else _ASGI
        # pathsend is not offered to a sandboxed app: the file is checked here but opened
        # later by Bun, outside the sandbox, so the app could swap a symlink in between
        self.extensions = {} if sandboxed else _HTTP_EXTENSIONS
        self.state = {}
        self.lifespan = None  # the lifespan task, when the app supports it
        self.lifespan_queue = None
        self.lifespan_done = None
        self.tasks = set()  # app calls still running (a response may be done before its app call)
        self.leases = None  # ThreadLeases: reused threads for asgiref's thread-sensitive code


@types.coroutine
def _resume(coro, yielded):
    """Goes on with a coroutine that already ran up to its first suspension (it yielded
    `yielded`), as `yield from` would: what the driving task sends or throws is passed on."""
    while True:
        try:
            value = yield yielded
        except BaseException as e:
            try:
                yielded = coro.throw(e)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(value)
            except StopIteration as stop:
                return stop.value


async def _continue(coro, yielded):
    return await _resume(coro, yielded)


def load(app_id, target, paths, sandboxed=False, interface="auto", threads="reuse"):
    """Imports "module:attr" (attr may be dotted) and registers the app under app_id.
    `interface`: "auto" (ASGI 3, ASGI 2 or WSGI, detected), "asgi" (ASGI 3 or 2, detected),
    "asgi3", "asgi2" or "wsgi". `threads`: "reuse" (an ASGI app that loaded asgiref gets
    its per-request threads from idle ones, see bunpy._asgiref_threads) or "per-request".
    Returns what it serves as: "asgi3", "asgi2" or "wsgi"."""
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f'bunpy: expected "module:attribute", got {target!r}')
    if interface not in ("auto", "asgi", "asgi3", "asgi2", "wsgi"):
        raise ValueError(f"bunpy: interface must be auto, asgi, asgi3, asgi2 or wsgi, got {interface!r}")
    import importlib

    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(f"bunpy: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise TypeError(f"bunpy: {target} is not callable")
    k = interface
    if k in ("auto", "asgi"):
        seen = detect(obj)
        if k == "asgi" and seen == "wsgi":
            raise TypeError(
                f"bunpy: {target} looks like a WSGI app (it takes (environ, start_response)): serve it "
                'with py.wsgi, or say which ASGI version it speaks (interface: "asgi3" or "asgi2")'
            )
        if seen is None:
            seen = "asgi3" if k == "asgi" else "wsgi"  # an async callable is ASGI
        k = seen
    a = _App(obj, sandboxed, k)
    if threads == "reuse" and k != "wsgi":
        a.leases = ThreadLeases.for_app()
    _state()[0][app_id] = a
    return k


def kind_of(app_id):
    return _state()[0][app_id].kind


# ---- lifespan ---------------------------------------------------------------------------


async def lifespan_startup(app_id):
    """Runs the lifespan startup. Returns True (supported and complete), False (the app does
    not support lifespan: it raised before asking for the startup event, as uvicorn's
    "auto"). An app that took the event and then raised failed its startup: that is an
    error, with the traceback printed, not a quiet "unsupported"."""
    a = _state()[0][app_id]
    loop = asyncio.get_running_loop()
    a.lifespan_queue = asyncio.Queue()
    a.lifespan_queue.put_nowait({"type": "lifespan.startup"})
    started = loop.create_future()
    a.lifespan_done = loop.create_future()
    sent = []
    received = []

    async def receive():
        m = await a.lifespan_queue.get()
        received.append(m["type"])
        return m

    async def send(message):
        t = message.get("type")
        sent.append(t)
        if t in ("lifespan.startup.complete", "lifespan.startup.failed"):
            if not started.done():
                started.set_result(message)
        elif t in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if not a.lifespan_done.done():
                a.lifespan_done.set_result(message)

    async def run():
        scope = {"type": "lifespan", "asgi": a.asgi, "state": a.state}
        try:
            await a.app(scope, receive, send)
        except BaseException as e:
            if not started.done():
                if sent or received:
                    _report("the ASGI app's lifespan startup", e)
                started.set_result(None if not (sent or received) else {"type": "lifespan.startup.failed", "message": repr(e)})
            if not a.lifespan_done.done():
                a.lifespan_done.set_result({"type": "lifespan.shutdown.failed", "message": repr(e)})
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if not started.done():
                started.set_result(None)
            if not a.lifespan_done.done():
                a.lifespan_done.set_result({"type": "lifespan.shutdown.complete"})

    a.lifespan = loop.create_task(run())
    msg = await started
    if msg is None:
        a.lifespan = None  # unsupported
        return False
    if msg["type"] == "lifespan.startup.failed":
        a.lifespan = None
        raise RuntimeError(f"bunpy: the app's lifespan startup failed: {msg.get('message', '')}")
    return True


async def shutdown(app_id, timeout, lifespan):
    """close(): waits up to `timeout` s for the app calls still running (background work
    after a response), then runs the lifespan shutdown, and forgets the app."""
    apps = _state()[0]
    a = apps.get(app_id)
    if a is None:
        return None
    if a.tasks:
        await asyncio.wait(list(a.tasks), timeout=timeout)
    if lifespan and a.lifespan is not None:
        a.lifespan_queue.put_nowait({"type": "lifespan.shutdown"})
        # bounded like the rest of close(): at least a second, else what close() has left
        wait = max(timeout, 1.0)
        try:
            msg = await asyncio.wait_for(asyncio.shield(a.lifespan_done), wait)
        except TimeoutError:
            print(f"bunpy: the app's lifespan shutdown did not finish within {wait:g} s; closing anyway", file=sys.stderr)
            msg = {"type": "lifespan.shutdown.timeout"}
        a.lifespan = None
        if msg["type"] == "lifespan.shutdown.failed":
            print(f"bunpy: the app's lifespan shutdown failed: {msg.get('message', '')}", file=sys.stderr)
    if a.leases is not None:
        a.leases.close()
    del apps[app_id]
    return None


def forget(app_id):
    """The app is gone without a shutdown (its lifespan startup failed): forget it."""
    a = _state()[0].pop(app_id, None)
    if a is not None and a.leases is not None:
        a.leases.close()


def _report(what, e):
    """An app's exception, printed as uvicorn does (the client only sees a 500 or a close).
    A CancelledError is not the app's: bunpy cancelled it (the app was closed with it in
    flight); nor is a GeneratorExit: the request's coroutine was dropped unfinished (its
    context ended under it, as when a Bun Worker is terminated), and the interpreter may be
    ending (no imports)."""
    if isinstance(e, (asyncio.CancelledError, GeneratorExit)):
        return
    import traceback

    print(f"bunpy: exception in {what}", file=sys.stderr)
    traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)


# ---- http -------------------------------------------------------------------------------


class _Request:
    __slots__ = (
        "rid", "body", "more", "head", "disconnected", "waiter", "status", "headers",
        "chunks", "queued", "complete", "error", "started", "returned", "drain", "puller",
        "result", "task", "path", "lease",
    )

    def __init__(self, rid, body, more, head):
        self.rid = rid
        self.body = body
        self.more = more
        self.head = head
        self.disconnected = False
        self.waiter = None  # future: receive() waiting for the disconnect
        self.status = 0
        self.headers = None
        self.chunks = []
        self.queued = 0
        self.complete = False
        self.error = None
        self.started = False
        self.returned = False  # handle() has given the response head to JS
        self.drain = None  # future: send() waiting for JS to pull
        self.puller = None  # future: pull() waiting for send()
        self.result = None  # future: handle() waiting for the head
        self.task = None  # the app call's task, once it waited for something
        self.path = None  # http.response.pathsend: the file Bun sends
        self.lease = None  # (ThreadLeases, lease) while the app call runs


def _headers_out(headers):
    """[name, value, ...] as str; every header is a (name, value) pair (one of another length
    would shift the names and values after it)."""
    if type(headers) is not list and type(headers) is not tuple:
        headers = list(headers)  # any iterable (a generator is read once)
    try:
        # unpacking each pair checks its length (ValueError); no tuple per pair is made
        flat = []
        for k, v in headers:
            flat.append(k.decode("latin-1"))
            flat.append(v.decode("latin-1"))
        return flat
    except (AttributeError, TypeError, ValueError):
        pass
    out = []
    for pair in headers:
        if len(pair) != 2:
            raise TypeError(f"bunpy: an ASGI header is a (name, value) pair, got {pair!r}")
        k, v = pair
        out.append(k.decode("latin-1") if isinstance(k, (bytes, bytearray)) else str(k))
        out.append(v.decode("latin-1") if isinstance(v, (bytes, bytearray)) else str(v))
    return out


def _enc(s):
    try:
        return s.encode("latin-1")
    except UnicodeEncodeError:
        return s.encode("utf-8")


_SERVER_CACHE = {}


async def handle(app_id, rid, method, target, headers, client_host, client_port, body, more,
                 scheme, server_host, server_port, root_path):
    apps, requests = _state()
    a = apps[app_id]
    raw, _, query = target.partition("?")
    try:
        it = iter(headers)
        hs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in zip(it, it)]
    except UnicodeEncodeError:
        it = iter(headers)
        hs = [(_enc(k), _enc(v)) for k, v in zip(it, it)]
    server = _SERVER_CACHE.get((server_host, server_port))
    if server is None:
        server = _SERVER_CACHE[(server_host, server_port)] = (server_host, server_port)
    scope = {
        "type": "http",
        "asgi": a.asgi,
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": unquote(raw) if "%" in raw else raw,
        "raw_path": _enc(raw),
        "query_string": _enc(query),
        "root_path": root_path,
        "headers": hs,
        "client": (client_host, client_port) if client_host is not None else None,
        "server": server,
        "state": a.state.copy(),
        "extensions": a.extensions,
    }
    r = _Request(rid, body if body is not None else b"", more, method == "HEAD")
    requests[rid] = r
    # The app's first step runs here, without a task: an app that answers without waiting
    # (most requests) costs no task, no future and no loop iteration. Only an app that
    # suspends goes on as a task (_continue picks it up where it stopped).
    # The first step and the task run in one Context of their own, as one task would:
    # a ContextVar token set before the first suspension is reset after it (asgiref does).
    coro = _run(a.app, scope, r, a.extensions is _HTTP_EXTENSIONS)
    ctx = contextvars.copy_context()
    if a.leases is not None:
        lease = a.leases.enter(ctx)
        if lease is not None:
            r.lease = (a.leases, lease)
    try:
        yielded = ctx.run(coro.send, None)
    except StopIteration:
        pass
    else:
        t = asyncio.get_running_loop().create_task(_continue(coro, yielded), context=ctx)
        r.task = t
        a.tasks.add(t)
        t.add_done_callback(a.tasks.discard)
        if not (r.complete or r.chunks or r.error is not None):
            r.result = asyncio.get_running_loop().create_future()
            await r.result
    r.returned = True
    # nothing has reached the client yet: an app that failed, even after its
    # http.response.start, still gets a clean 500 (not a dropped connection)
    if r.error is not None:
        requests.pop(rid, None)
        return [500, ["content-type", "text/plain; charset=utf-8", "content-length", "21"], b"Internal Server Error", DONE]
    body = b"".join(r.chunks) if len(r.chunks) != 1 else r.chunks[0]
    r.chunks = []
    r.queued = 0
    if r.complete:
        requests.pop(rid, None)
        if r.path is not None:
            return [r.status, _headers_out(r.headers), r.path, PATHSEND]
        return [r.status, _headers_out(r.headers), body, DONE]
    return [r.status, _headers_out(r.headers), body, STREAM]


def _read(rid):
    """The next request body chunk from JS (None at the end, False: the client left)."""
    if _bunpy.in_context():
        return bunpy.async_call("__bunpy_asgi_read", rid)
    from bunpy._inline import async_call  # inline mode: the main interpreter, on the JS thread

    return async_call("__bunpy_asgi_read", rid)


async def _run(app, scope, r, pathsend):
    """`pathsend`: the app was offered http.response.pathsend (its scope is its own to change;
    src/asgi.ts refuses it for a sandboxed app whatever this says)."""
    async def receive():
        if r.body is not None:
            body, r.body = r.body, None
            return {"type": "http.request", "body": body, "more_body": r.more}
        if r.more and not r.disconnected:
            chunk = await _read(r.rid)
            if chunk is None:
                r.more = False
                return {"type": "http.request", "body": b"", "more_body": False}
            if chunk is False:  # the client went away
                r.disconnected = True
                r.more = False
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunk, "more_body": True}
        if not r.disconnected and not r.complete:
            r.waiter = asyncio.get_running_loop().create_future()
            await r.waiter
        return {"type": "http.disconnect"}

    async def send(message):
        if r.disconnected:
            raise OSError("bunpy: the client has disconnected")
        t = message["type"]
        if t == "http.response.start":
            if r.started:
                raise RuntimeError("bunpy: http.response.start sent twice")
            r.status = int(message["status"])
            r.headers = message.get("headers", ())
            r.started = True
            if r.head:
                r.complete = True
                _wake(r)
        elif t == "http.response.body":
            if not r.started:
                raise RuntimeError("bunpy: http.response.body before http.response.start")
            if r.complete:
                if r.head:
                    return
                raise RuntimeError("bunpy: http.response.body after the response was complete")
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            if chunk:
                r.chunks.append(bytes(chunk) if not isinstance(chunk, bytes) else chunk)
                r.queued += len(chunk)
            if not more:
                r.complete = True
                _wake(r)
                if r.waiter is not None and not r.waiter.done():
                    r.waiter.set_result(None)
            else:
                _wake(r)
                if r.returned and r.queued >= _HIGH_WATER:
                    r.drain = asyncio.get_running_loop().create_future()
                    await r.drain
                    if r.disconnected:
                        raise OSError("bunpy: the client has disconnected")
        elif t == "http.response.pathsend" and pathsend:
            if r.complete and r.head:
                return  # HEAD: the response ended with its head
            if not r.started or r.complete:
                raise RuntimeError("bunpy: http.response.pathsend before http.response.start or after the body")
            path = message["path"]
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"bunpy: http.response.pathsend needs an absolute path, got {path!r}")
            open(path, "rb").close()  # a missing or unreadable file is the app's error
            r.path = path
            r.complete = True
            _wake(r)
            if r.waiter is not None and not r.waiter.done():
                r.waiter.set_result(None)
        else:
            raise RuntimeError(f"bunpy: unexpected ASGI message {t!r}")

    try:
        await app(scope, receive, send)
    except BaseException as e:
        if not r.disconnected:
            _report("ASGI application", e)
        r.error = e
        if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            _finish(r)
            raise
    else:
        if not r.started:
            r.error = RuntimeError("bunpy: the ASGI app returned without starting a response")
            if not r.disconnected:  # after http.disconnect (a client gone, the app closing) it may
                print(str(r.error), file=sys.stderr)
        elif not r.complete:
            r.error = RuntimeError("bunpy: the ASGI app returned without completing the response")
    _finish(r)


def _wake(r):
    res = r.result
    if res is not None and not res.done() and (r.complete or r.chunks or r.head):
        res.set_result(None)
    p = r.puller
    if p is not None and not p.done():
        p.set_result(None)


def _finish(r):
    """The app call is over (returned or raised)."""
    r.body = None
    if r.lease is not None:
        leases, lease = r.lease
        r.lease = None
        leases.release(lease)
    res = r.result
    if res is not None and not res.done():
        res.set_result(None)
    p = r.puller
    if p is not None and not p.done():
        p.set_result(None)
    if r.returned and (r.complete and not r.chunks) and r.error is None:
        _state()[1].pop(r.rid, None)


async def pull(rid):
    """The next part of a streamed response: [bytes, more]. Raises the app's error."""
    requests = _state()[1]
    r = requests.get(rid)
    if r is None:
        return [b"", False]
    while not r.chunks and not r.complete and not r.disconnected and r.error is None and r.task is not None and not r.task.done():
        r.puller = asyncio.get_running_loop().create_future()
        await r.puller
        r.puller = None
    if r.chunks:
        body = b"".join(r.chunks) if len(r.chunks) != 1 else r.chunks[0]
        r.chunks = []
        r.queued = 0
        d = r.drain
        if d is not None and not d.done():
            d.set_result(None)
        if r.complete:
            requests.pop(rid, None)
            return [body, False]
        return [body, True]
    requests.pop(rid, None)
    if r.complete or r.disconnected:
        return [b"", False]
    raise RuntimeError("bunpy: the ASGI app failed after the response started") from r.error


def disconnect(rid):
    """The client went away (JS saw the request's signal abort, or the response stream was
    cancelled): receive() returns http.disconnect, send() raises OSError."""
    r = _state()[1].pop(rid, None)
    if r is None:
        return None
    r.disconnected = True
    for f in (r.waiter, r.drain, r.puller):
        if f is not None and not f.done():
            f.set_result(None)
    return None
