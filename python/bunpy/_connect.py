"""Connecting and accepting for bunpy's C stream transports, without asyncio's detours.

asyncio's selector loop accepts a connection with a Task per connection
(`_accept_connection2`) and a waiter future, and connects through `sock_connect` (a
coroutine, a future, a writer handle, a done callback) and `_create_connection_transport`
(another coroutine and a waiter). Here, for plain TCP and Unix stream sockets with the C
transports (no ssl, not in debug mode):

  * accept: the reactor accepts from the listening fd until EAGAIN, at most `backlog` per
    event as asyncio does (shim/accept.c; or, with loop._bunpy_connect == "python", a
    reader callback here), and each connection's transport is made at once;
    `connection_made` runs from the loop's ready queue, as with asyncio;
  * connect (a numeric host, after asyncio's own `_ipaddr_info` shortcut): a non-blocking
    connect on an fd registered once for the transport to come (shim/connect.c); the
    reactor's callback makes the protocol and the transport, and the caller's one future is
    done once `connection_made` has run, as asyncio's waiter is.

Everything else (names to resolve, happy eyeballs, local_addr, sock=, ssl, debug mode,
overridden or mocked methods) goes to asyncio's own code.
"""

import errno
import functools
import os
import socket
import sys
from asyncio import base_events, constants, trsock
from asyncio.log import logger

from bunpy._transport import SocketTransport

_SOCK_STREAM = socket.SOCK_STREAM
_NONBLOCK = socket.SOCK_NONBLOCK
_NOT = object()
_AF_INET = int(socket.AF_INET)
_AF_INET6 = int(getattr(socket, "AF_INET6", -1))
_IN_PROGRESS = (errno.EINPROGRESS, errno.EINTR)
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_SOL_SOCKET = socket.SOL_SOCKET
_SO_ERROR = socket.SO_ERROR
_IPPROTO_TCP = socket.IPPROTO_TCP
_TCP_NODELAY = getattr(socket, "TCP_NODELAY", None)

# create_connection keyword arguments the fast path accepts, with the values it needs
# (anything else, or another value, goes to asyncio's create_connection)
_DEFAULTS = {
    "ssl": None, "sock": None, "local_addr": None, "server_hostname": None,
    "ssl_handshake_timeout": None, "ssl_shutdown_timeout": None,
    "happy_eyeballs_delay": None, "interleave": None,
}
if sys.version_info >= (3, 12):
    _DEFAULTS["all_errors"] = False
_ANY = ("family", "proto", "flags")


def _is_tcp(family, proto):
    """Whether asyncio's _set_nodelay would set TCP_NODELAY on such a socket."""
    return _TCP_NODELAY is not None and (family == _AF_INET or family == _AF_INET6) and proto == _IPPROTO_TCP


def plain_stream(loop, sock):
    """A real stream socket, and a loop whose transport and accept methods are bunpy's own
    (asyncio's tests replace some with mocks: then asyncio's path is taken)."""
    if not isinstance(sock, socket.socket) or sock.type != _SOCK_STREAM or loop._debug:
        return False
    d = loop.__dict__
    return not ("_make_socket_transport" in d or "_accept_connection2" in d) and loop._bunpy_own_methods


def own_methods(cls, bunpy_loop):
    """Whether a loop class keeps the methods the fast paths stand in for."""
    from asyncio import selector_events

    base = selector_events.BaseSelectorEventLoop
    return (
        cls._make_socket_transport is bunpy_loop._make_socket_transport
        and cls._accept_connection2 is base._accept_connection2
        and cls.sock_connect is base.sock_connect
        and cls._create_connection_transport is base._create_connection_transport
    )


# -- accept in C (shim/accept.c) ----------------------------------------------------------------


def start_accepting(loop, protocol_factory, sock, server, backlog):
    """What asyncio's _start_serving does (a reader on the listening socket), with the accept
    loop in the reactor: each connection comes to _accepted with its fd non-blocking."""
    loop._check_closed()
    fd = sock.fileno()
    family, proto = int(sock.family), sock.proto
    callback = functools.partial(
        _accepted, loop, protocol_factory, sock, server, backlog, family, int(sock.type) | _NONBLOCK, proto,
        _is_tcp(family, proto),
    )
    loop._reactor.accept_start(fd, callback, backlog)
    loop._bunpy_listening[fd] = server


def stop_accepting(loop, sock):
    """asyncio's _stop_serving for a socket accepted from in C: False if it is not one."""
    fd = sock.fileno()
    if fd < 0 or fd not in loop._bunpy_listening:
        return False
    del loop._bunpy_listening[fd]
    if not loop.is_closed():
        loop._reactor.accept_stop(fd)
    sock.close()
    return True


def _accepted(loop, protocol_factory, sock, server, backlog, family, type_, proto, tcp, fd, addr):
    if fd < 0:  # accept failed: -errno
        err = -fd
        exc = OSError(err, os.strerror(err))
        if err in _OUT_OF_RESOURCES:
            _out_of_resources(loop, exc, protocol_factory, sock, server, backlog)
        else:  # as asyncio's reader would: its loop logs what the callback raised
            loop.call_exception_handler({
                "message": f"Exception in callback {loop._accept_connection!r}", "exception": exc,
            })
        return
    try:
        conn = socket.socket(family, type_, proto, fd)
    except BaseException:
        os.close(fd)
        raise
    if addr is None:
        try:
            addr = conn.getpeername()
        except OSError:
            pass
    _made(loop, protocol_factory, conn, addr, server, tcp)


def _out_of_resources(loop, exc, protocol_factory, sock, server, backlog):
    # Linux keeps reporting the socket as readable: stop watching it for a while and try
    # again later (as asyncio does)
    loop.call_exception_handler({
        "message": "socket.accept() out of system resource",
        "exception": exc,
        "socket": trsock.TransportSocket(sock),
    })
    fd = sock.fileno()
    if loop._bunpy_listening.pop(fd, _NOT) is not _NOT:
        loop._reactor.accept_stop(fd)
    else:
        loop._remove_reader(fd)
    loop.call_later(constants.ACCEPT_RETRY_DELAY, loop._start_serving, protocol_factory, sock, None, server, backlog)


def _made(loop, protocol_factory, conn, addr, server, tcp):
    """A connection accepted: its protocol and its transport (connection_made comes from
    the ready queue), as asyncio's _accept_connection2 without the Task and the waiter."""
    if loop._debug:
        logger.debug("%r got a new connection from %r: %r", server, addr, conn)
    if server is not None and server._sockets is None:
        conn.close()  # the server was closed by a protocol made in this burst
        return
    protocol = transport = None
    try:
        protocol = protocol_factory()
        transport = SocketTransport(loop, conn, protocol, None, {"peername": addr}, server, tcp)
    except (SystemExit, KeyboardInterrupt):
        if transport is None:
            conn.close()
        raise
    except BaseException as exc:
        if transport is None:
            conn.close()
        if loop._debug:  # as asyncio: the error is reported in debug mode only
            context = {"message": "Error on transport creation for incoming connection", "exception": exc}
            if protocol is not None:
                context["protocol"] = protocol
            if transport is not None:
                context["transport"] = transport
            loop.call_exception_handler(context)


# -- accept in a reader callback (BUNPY_LOOP_CONNECT=python) -----------------------------------


def accept_connections(loop, protocol_factory, sock, server, backlog):
    """The listening socket is readable: accept up to `backlog` connections (until EAGAIN),
    each with its transport made now. What asyncio's _accept_connection does, without a Task
    and a waiter per connection."""
    family, type_, proto = int(sock.family), int(sock.type), sock.proto
    accept = sock._accept
    tcp = _is_tcp(family, proto)
    for _ in range(backlog):
        try:
            fd, addr = accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # the accept queue is empty
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                _out_of_resources(loop, exc, protocol_factory, sock, server, backlog)
                return
            raise  # the loop logs it, as asyncio's does
        conn = socket.socket(family, type_, proto, fd)
        try:
            conn.setblocking(False)
        except BaseException:
            conn.close()
            raise
        _made(loop, protocol_factory, conn, addr, server, tcp)


# -- connect ----------------------------------------------------------------------------------


def fast_address(loop, host, port, kwargs):
    """(family, proto, address) when create_connection can take the fast path, else None."""
    if loop._debug or host is None or port is None or base_events.socket is not socket:
        return None  # (asyncio's tests replace base_events.socket with a mock)
    d = loop.__dict__
    if "sock_connect" in d or "_make_socket_transport" in d or "_create_connection_transport" in d:
        return None
    if not loop._bunpy_own_methods:
        return None
    for k, v in kwargs.items():
        if k in _ANY:
            continue
        if k not in _DEFAULTS or (v is not None if _DEFAULTS[k] is None else v):
            return None
    info = base_events._ipaddr_info(host, port, kwargs.get("family", 0), _SOCK_STREAM, kwargs.get("proto", 0))
    if info is None:
        return None
    family, _, proto, _, address = info
    return int(family), proto, address


async def create_connection(loop, protocol_factory, family, proto, address):
    """asyncio's create_connection for one numeric address: a non-blocking connect whose end
    the reactor reports (shim/connect.c: the fd is registered once, for the transport to
    come); that callback makes the protocol and the transport."""
    loop._check_closed()
    sock = socket.socket(family, _SOCK_STREAM | _NONBLOCK, proto)  # (non-blocking: no ioctl after)
    reactor = loop._reactor
    fut = state = None
    try:
        fut = loop.create_future()
        state = [sock, address, protocol_factory, _is_tcp(family, proto), None, None]  # .., protocol, transport
        err = sock.connect_ex(address)
        if err == 0:
            _connected(loop, fut, state)
        elif err in _IN_PROGRESS:
            fd = sock.fileno()
            loop._ensure_fd_no_transport(fd)
            reactor.connect_wait(fd, functools.partial(_connect_done, loop, fut, state))
        else:
            raise OSError(err, os.strerror(err))
        await fut
        return state[5], state[4]
    except BaseException:
        transport = state[5] if state is not None else None
        if transport is not None:
            transport.close()
        else:
            if sock.fileno() >= 0:
                reactor.connect_cancel(sock.fileno())
            sock.close()
        raise
    finally:
        fut = state = None  # break cycles through the traceback


def _connect_done(loop, fut, state, err):
    if fut.done():  # cancelled: the task's except clause drops the registration
        return
    if err:
        fut.set_exception(OSError(err, f"Connect call failed {state[1]}"))
        return
    _connected(loop, fut, state)


def _connected(loop, fut, state):
    """The socket is connected: the protocol and the transport; `fut` is done after
    connection_made (the transport's waiter)."""
    sock = state[0]
    try:
        protocol = state[4] = state[2]()
        state[5] = SocketTransport(loop, sock, protocol, fut, None, None, state[3])
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        if not fut.done():
            fut.set_exception(exc)
