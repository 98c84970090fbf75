"""WSGI (PEP 3333) on Bun.serve: the Python half (the JS half is src/wsgi.ts).

The app runs synchronously on the context's thread. `handle` calls it and returns the
whole response when its iterable is done within 64 KiB, else the head and the first part;
JS then pulls the rest with `pull` (one call per part, so the context serves other
requests between parts). wsgi.input reads chunks from JS on demand through
bunpy.call("__bunpy_wsgi_read", rid).
"""

import sys
from urllib.parse import unquote

import bunpy
import threading

from bunpy._asgi import _enc, _state

DONE, STREAM = 0, 1
_PART = 65536
_tl = threading.local()  # per context thread, as in bunpy._asgi


def _streams():
    """Responses still being pulled, by request id, of the calling context."""
    try:
        return _tl.streams
    except AttributeError:
        d = _tl.streams = {}
        return d


class _Input:
    """wsgi.input: reads the request body from JS only as the app asks."""

    def __init__(self, rid, body, more):
        self._rid = rid
        self._buf = bytearray(body or b"")
        self._more = more

    def _fill(self):
        if not self._more:
            return False
        chunk = bunpy.call("__bunpy_wsgi_read", self._rid)
        if chunk is None:
            self._more = False
            return False
        self._buf += chunk
        return True

    def read(self, size=-1):
        if size is None or size < 0:
            while self._fill():
                pass
            out = bytes(self._buf)
            self._buf.clear()
            return out
        while len(self._buf) < size and self._fill():
            pass
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def readline(self, size=-1):
        while True:
            i = self._buf.find(b"\n")
            if i >= 0 and (size is None or size < 0 or i < size):
                return self.read(i + 1)
            if size is not None and 0 <= size <= len(self._buf):
                return self.read(size)
            if not self._fill():
                return self.read(len(self._buf) if size is None or size < 0 else min(size, len(self._buf)))

    def readlines(self, hint=-1):
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class _Response:
    __slots__ = ("status", "headers", "pending", "iterable", "iterator", "sent")

    def __init__(self):
        self.status = None
        self.headers = None
        self.pending = []
        self.iterable = None
        self.iterator = None
        self.sent = False  # the head went to JS


def _report(what):
    """Prints the exception being handled on stderr, as servers log app errors."""
    import traceback

    print(f"bunpy: {what}", file=sys.stderr)
    traceback.print_exc(file=sys.stderr)


def _close(resp):
    """Calls the iterable's close() (PEP 3333) once. Its errors are reported, not raised:
    by then the response is complete or already failing, and the client should see that."""
    close = getattr(resp.iterable, "close", None)
    resp.iterable = resp.iterator = None
    if close is not None:
        try:
            close()
        except BaseException:
            _report("exception in the WSGI iterable's close()")


def _collect(resp):
    """Body parts up to _PART bytes: (bytes, more)."""
    size = sum(len(p) for p in resp.pending)
    it = resp.iterator
    while size < _PART and it is not None:
        try:
            part = next(it)
        except StopIteration:
            it = None
            break
        if part:
            resp.pending.append(part)
            size += len(part)
    body = b"".join(resp.pending)
    resp.pending = []
    return body, it is not None


def handle(app_id, rid, method, target, headers, client_host, client_port, body, more,
           scheme, server_host, server_port, root_path):
    app = _state()[0][app_id].app
    raw, _, query = target.partition("?")
    path = unquote(raw, encoding="latin-1") if "%" in raw else raw
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        path = path[len(root_path):]
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": root_path,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": server_host or "localhost",
        "SERVER_PORT": str(server_port or (443 if scheme == "https" else 80)),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": _Input(rid, body, more),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if client_host is not None:
        environ["REMOTE_ADDR"] = client_host
        environ["REMOTE_PORT"] = str(client_port)
    for i in range(0, len(headers), 2):
        name = headers[i]
        value = _enc(headers[i + 1]).decode("latin-1")
        if name == "content-type":
            environ["CONTENT_TYPE"] = value
            continue
        if name == "content-length":
            environ["CONTENT_LENGTH"] = value
            continue
        if "_" in name:
            # "X_User" and "X-User" would both be HTTP_X_USER: a client could forge a
            # header a proxy in front set; dropped as nginx and gunicorn do
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = environ[key] + "," + value if key in environ else value

    resp = _Response()

    def write(data):
        if resp.status is None:
            raise AssertionError("write() before start_response()")
        resp.pending.append(bytes(data))

    def start_response(status, response_headers, exc_info=None):
        if exc_info is not None:
            try:
                if resp.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif resp.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        if not isinstance(status, str) or len(status) < 4 or not (status[:3].isascii() and status[:3].isdigit()) or status[3] != " ":
            raise ValueError(f"bad WSGI status {status!r}")
        # PEP 3333: a list of (name, value) tuples of str (anything else used to reach the
        # client as "null: ..." or "name: 5"); a list as a pair is let through
        try:
            headers = list(response_headers)
        except TypeError:
            raise TypeError(f"WSGI response headers must be a list of (name, value) tuples, got {response_headers!r}") from None
        for h in headers:
            if not (isinstance(h, (tuple, list)) and len(h) == 2 and isinstance(h[0], str) and isinstance(h[1], str)):
                raise TypeError(f"a WSGI response header must be a (name, value) tuple of str, got {h!r}")
        resp.status = status
        resp.headers = headers
        return write

    try:
        resp.iterable = app(environ, start_response)
        resp.iterator = iter(resp.iterable)
        first, more_parts = _collect(resp)
        # the head is fixed by the first non-empty part (PEP 3333), or the end of the body
        while not first and more_parts:
            first, more_parts = _collect(resp)
        if resp.status is None:
            raise RuntimeError("the WSGI app did not call start_response()")
    except BaseException:
        _report("exception in WSGI application")
        _close(resp)
        return [500, ["content-type", "text/plain; charset=utf-8"], b"Internal Server Error", DONE]
    resp.sent = True
    flat = []
    for k, v in resp.headers:
        flat.append(k)
        flat.append(v)
    status = int(resp.status[:3])
    if not more_parts:
        _close(resp)
        return [status, flat, first, DONE]
    _streams()[rid] = resp
    return [status, flat, first, STREAM]


def pull(rid):
    streams = _streams()
    resp = streams.get(rid)
    if resp is None:
        return [b"", False]
    try:
        body, more = _collect(resp)
    except BaseException:
        # the head is gone: the connection is closed without a clean end
        _report("exception in WSGI application (after the response started)")
        streams.pop(rid, None)
        _close(resp)
        raise RuntimeError("bunpy: the WSGI app failed after the response started") from None
    if not more:
        streams.pop(rid, None)
        _close(resp)
    return [body, more]


def cancel(rid):
    """The client went away during a streamed response: close() the iterable."""
    resp = _streams().pop(rid, None)
    if resp is not None:
        _close(resp)
