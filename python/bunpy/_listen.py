"""Listeners per context (pool.listen in JS, bunpy.listen in Python) and connection hand-off.

pool.listen({ port, protocol: "module:Factory" }) opens one listening socket with
SO_REUSEPORT in every context of a pool, on the same port: the kernel spreads new
connections over the contexts, with no JS thread in the path. A context that accepted a
connection can hand it to another context with bunpy.hand_off(transport, to, data): the
socket (a duplicate of its fd: fds belong to the process) and the bytes already read go
there through JS, and the other context owns the connection from then on.
"""

import asyncio
import os
import socket
import threading

import bunpy

_tl = threading.local()  # per context thread: worker contexts share this module


def _listeners():
    """Listener id -> (asyncio Server, protocol factory) of the calling context."""
    try:
        return _tl.listeners
    except AttributeError:
        d = _tl.listeners = {}
        return d


def _load(target):
    import importlib

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f'bunpy: expected "module:Factory", got {target!r}')
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"bunpy: {target} is not callable (a protocol factory is)")
    return obj


async def listen(protocol_factory, host=None, port=0, **kwargs):
    """loop.create_server with SO_REUSEPORT: every context that listens on the same port
    shares the connections the kernel accepts. Returns the asyncio Server."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(protocol_factory, host, port, reuse_port=True, **kwargs)


async def start(lid, host, port, target, backlog):
    """pool.listen: this context's listening socket. Returns [the port it is bound to, its fd]."""
    factory = _load(target)
    server = await listen(factory, host, port, backlog=backlog)
    _listeners()[lid] = (server, factory)
    sock = server.sockets[0]
    return [sock.getsockname()[1], sock.fileno()]


def stop_listening_fd(fd):
    """Run in the main interpreter for a context that died: its listening socket is still
    open (nothing of a dead context is cleaned up) and the kernel would keep giving it
    connections that no one accepts. shutdown() takes it out of the port's group; the fd
    itself stays open, so its number cannot be reused under the dead context's objects."""
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        return False
    finally:
        s.close()
    return True


def stop(lid):
    """Stops accepting; the connections already made live on."""
    entry = _listeners().pop(lid, None)
    if entry is not None:
        entry[0].close()


def hand_off(transport, to, data=b""):
    """Gives a connection accepted by a pool.listen listener to another context of the
    pool: `to` is a context's index in the pool or a key (routed as pool calls with a key
    are). `data`: what this context already read and the other one must see first. The
    transport here is closed (its protocol gets connection_lost(None)); the connection is not.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        raise TypeError("bunpy.hand_off: the transport has no socket")
    # a transport handed off (or closed, aborted) is closing: handing its socket on again
    # would give one connection to two contexts, or revive one this context ended
    if transport.is_closing():
        raise RuntimeError("bunpy.hand_off: the transport is closing (handed off or closed already)")
    if not isinstance(to, (int, str)) or isinstance(to, bool):
        raise TypeError(f"bunpy.hand_off: `to` must be a context index or a key, got {type(to).__name__}")
    port = sock.getsockname()[1]
    lid = next((k for k, (server, _) in _listeners().items()
                if any(s.getsockname()[1] == port for s in server.sockets)), None)
    if lid is None:
        raise ValueError("bunpy.hand_off: the connection did not come from a pool.listen listener of this context, "
                         "or that listener was closed (listener.close(): its connections stay, they are not handed off)")
    transport.pause_reading()
    fd = os.dup(sock.fileno())
    try:
        bunpy.send("__bunpy_handoff", [lid, to, fd, bytes(data)])
    except BaseException:
        os.close(fd)
        raise
    transport.abort()  # closes this context's fd only: the duplicate keeps the socket open


async def adopt(lid, fd, data):
    """The receiving end of hand_off: serves the connection with the listener's factory,
    giving the protocol `data` before anything read here. `fd` stays JS's: it closes it
    when this call settles, also when it never ran (the context closed first), so this
    serves a duplicate."""
    entry = _listeners().get(lid)
    if entry is None:
        return False
    fd = os.dup(fd)
    try:
        sock = socket.socket(fileno=fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        protocol = entry[1]()
        if data:
            _prime(protocol, data)
        await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, sock)
    except BaseException:
        sock.close()  # the connection ends here: the client sees it close
        raise
    return True


def _prime(protocol, data):
    """Makes `protocol` receive `data` right after connection_made, before the transport
    reads from the socket (connection_made is called before the reader is added)."""
    made = protocol.connection_made

    def connection_made(transport):
        del protocol.connection_made  # the class's method again
        made(transport)
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(data)
            while view:
                buf = protocol.get_buffer(len(view))
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                protocol.buffer_updated(n)
                view = view[n:]
        else:
            protocol.data_received(data)

    try:
        protocol.connection_made = connection_made
    except AttributeError:
        raise TypeError("bunpy.hand_off: the protocol takes no instance attributes (__slots__), so the bytes "
                        "already read cannot be given to it first; give it a __dict__") from None
