"""ASGI websockets on Bun.serve: the Python half (the JS half is src/asgi-websocket.ts).

JS upgrades the connection when the app accepts; frames from the client arrive through
ws_receive / ws_disconnect (casts), frames to the client leave through
bunpy.send("__bunpy_ws", [rid, kind, ...]) — in order, with send()'s back-pressure. The
app and the request records are bunpy._asgi's (one registry per context).
"""

import asyncio
from urllib.parse import unquote

import bunpy
from bunpy._asgi import _enc, _headers_out, _report, _state

# the denial-response extension: an HTTP response instead of a websocket
_WS_EXTENSIONS = {"websocket.http.response": {}}

_WS_CONNECTING, _WS_OPEN, _WS_CLOSED = 0, 1, 2


_WS_OUT_HIGH = 1 << 20


class _WS:
    __slots__ = ("rid", "queue", "state", "result", "client_closed", "denial", "taken", "acked", "ack_every", "peak",
                 "out_sent", "out_acked", "out_waiter")

    def __init__(self, rid, max_queue):
        self.rid = rid
        # Frames from the client: JS stops reading the socket (ws.pause()) once max_queue
        # frames were handed over and not taken by the app; receive() tells JS how many it
        # took every max_queue/2 frames, and JS resumes reading below max_queue.
        self.queue = asyncio.Queue()
        self.taken = 0
        self.acked = 0
        self.ack_every = max(1, max_queue // 2)
        self.peak = 0  # the most frames that waited at once (for tests)
        self.state = _WS_CONNECTING
        self.result = None
        self.client_closed = False
        self.denial = None  # [status, headers, body chunks]: an HTTP response instead
        # Frames to the client: each carries the running total of what the app sent (a
        # length per frame); JS gives the total back once Bun took the frames (ws.send not
        # backpressured, or its drain), every _WS_OUT_HIGH/2 at least. send() waits while
        # _WS_OUT_HIGH of it is not given back, so a client that reads slowly slows the app
        # down instead of Bun dropping frames past its backpressureLimit.
        self.out_sent = 0
        self.out_acked = 0
        self.out_waiter = None


async def ws_connect(app_id, rid, target, headers, client_host, client_port, scheme, server_host,
                     server_port, root_path, subprotocols, max_queue=32):
    """Runs the app until it accepts or refuses: ["accept", subprotocol, headers],
    ["close", status] or ["deny", status, headers, body] (the denial-response extension)."""
    apps, requests = _state()
    a = apps[app_id]
    raw, _, query = target.partition("?")
    it = iter(headers)
    scope = {
        "type": "websocket",
        "asgi": a.asgi,
        "http_version": "1.1",
        "scheme": scheme,
        "path": unquote(raw) if "%" in raw else raw,
        "raw_path": _enc(raw),
        "query_string": _enc(query),
        "root_path": root_path,
        "headers": [(_enc(k), _enc(v)) for k, v in zip(it, it)],
        "client": (client_host, client_port) if client_host is not None else None,
        "server": (server_host, server_port),
        "subprotocols": subprotocols,
        "state": a.state.copy(),
        "extensions": _WS_EXTENSIONS,
    }
    w = _WS(rid, max_queue)
    requests[rid] = w
    loop = asyncio.get_running_loop()
    w.result = loop.create_future()
    w.queue.put_nowait({"type": "websocket.connect"})
    t = loop.create_task(_ws_run(a.app, scope, w))
    a.tasks.add(t)
    t.add_done_callback(a.tasks.discard)
    return await w.result


async def _ws_run(app, scope, w):
    async def receive():
        m = await w.queue.get()
        if m["type"] == "websocket.receive":
            w.taken += 1
            if w.taken - w.acked >= w.ack_every and not w.client_closed:
                w.acked = w.taken
                bunpy.send("__bunpy_ws", [w.rid, 3, w.taken])  # JS may read more
        return m

    async def send(message):
        t = message["type"]
        if w.client_closed:
            raise OSError("bunpy: the websocket was closed by the client")
        if t == "websocket.accept":
            if w.state != _WS_CONNECTING or w.denial is not None:
                raise RuntimeError("bunpy: websocket.accept after the handshake or a denial response")
            w.state = _WS_OPEN
            w.result.set_result(["accept", message.get("subprotocol"), _headers_out(message.get("headers", ()))])
        elif t == "websocket.send":
            if w.state != _WS_OPEN:
                raise RuntimeError("bunpy: websocket.send before accept or after close")
            text = message.get("text")
            if text is not None:
                w.out_sent += len(text) + 16
                bunpy.send("__bunpy_ws", [w.rid, 0, text, w.out_sent])
            else:
                data = bytes(message.get("bytes") or b"")
                w.out_sent += len(data) + 16
                bunpy.send("__bunpy_ws", [w.rid, 1, data, w.out_sent])
            # back-pressure: wait while Bun has not taken enough. Senders share one future
            # (a broadcast task and a receive loop may both be waiting here)
            waited = False
            while w.out_sent - w.out_acked >= _WS_OUT_HIGH and not w.client_closed:
                waiter = w.out_waiter
                if waiter is None or waiter.done():
                    waiter = w.out_waiter = asyncio.get_running_loop().create_future()
                waited = True
                await asyncio.shield(waiter)  # one sender cancelled does not wake the rest
            if waited and w.client_closed:
                raise OSError("bunpy: the websocket was closed by the client")
        elif t == "websocket.http.response.start":
            if w.state != _WS_CONNECTING or w.denial is not None:
                raise RuntimeError("bunpy: websocket.http.response.start after the handshake")
            w.denial = [int(message["status"]), _headers_out(message.get("headers", ())), []]
        elif t == "websocket.http.response.body":
            if w.denial is None or w.state != _WS_CONNECTING:
                raise RuntimeError("bunpy: websocket.http.response.body without websocket.http.response.start")
            w.denial[2].append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                _ws_deny(w)
        elif t == "websocket.close":
            if w.denial is not None:
                raise RuntimeError("bunpy: websocket.close during a denial response")
            if w.state == _WS_CONNECTING:
                w.state = _WS_CLOSED
                w.result.set_result(["close", 403])
            elif w.state == _WS_OPEN:
                w.state = _WS_CLOSED
                bunpy.send("__bunpy_ws", [w.rid, 2, int(message.get("code", 1000)), message.get("reason") or ""])
        else:
            raise RuntimeError(f"bunpy: unexpected ASGI message {t!r}")

    try:
        await app(scope, receive, send)
    except BaseException as e:
        if not w.client_closed:
            _report("ASGI websocket application", e)
        _ws_end(w, 500, 1011)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
    else:
        _ws_end(w, 403, 1000)


def _ws_deny(w):
    status, headers, chunks = w.denial
    w.state = _WS_CLOSED
    w.result.set_result(["deny", status, headers, b"".join(chunks)])


def _ws_end(w, status, code):
    if w.state == _WS_CONNECTING and w.denial is not None and status != 500:
        _ws_deny(w)  # the app returned with its denial body unfinished: send what it gave
    elif w.state == _WS_CONNECTING:
        w.result.set_result(["close", status])
    elif w.state == _WS_OPEN and not w.client_closed:
        bunpy.send("__bunpy_ws", [w.rid, 2, code, ""])
    w.state = _WS_CLOSED
    _state()[1].pop(w.rid, None)


def ws_receive(rid, text, data):
    w = _state()[1].get(rid)
    if w is not None:
        q = w.queue
        if text is not None:
            q.put_nowait({"type": "websocket.receive", "text": text})
        else:
            q.put_nowait({"type": "websocket.receive", "bytes": data})
        if q.qsize() > w.peak:
            w.peak = q.qsize()


def ws_acked(rid, total):
    """JS: Bun took the frames up to `total` (see _WS.out_sent)."""
    w = _state()[1].get(rid)
    if w is None or total <= w.out_acked:
        return
    w.out_acked = total
    if w.out_waiter is not None and not w.out_waiter.done() and w.out_sent - total < _WS_OUT_HIGH:
        w.out_waiter.set_result(None)


def ws_disconnect(rid, code, reason):
    w = _state()[1].pop(rid, None)
    if w is not None:
        w.client_closed = True
        if w.out_waiter is not None and not w.out_waiter.done():
            w.out_waiter.set_result(None)  # its send() raises: the client is gone
        w.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
