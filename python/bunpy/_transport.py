"""bunpy's stream socket transport (TCP, Unix): the cold half, over _bunpy.StreamCore.

StreamCore (shim/transport.c) does the hot half in C — reading until EAGAIN into
Protocol.data_received or a BufferedProtocol's buffer, write()/writelines() sent at once or
queued in C, the water marks, pause/resume — on the fd registered once, edge-triggered, in
the loop's reactor. What is left here mirrors asyncio's _SelectorSocketTransport: making the
connection, closing, aborting, errors and connection_lost, extra info.
"""

import socket
import warnings
from asyncio import base_events, constants, futures
from asyncio.log import logger

import _bunpy

# Server._attach/_detach take the transport on newer Pythons (3.12.? and 3.13)
_SERVER_TAKES_TRANSPORT = None


def _server_takes_transport(server):
    global _SERVER_TAKES_TRANSPORT
    if _SERVER_TAKES_TRANSPORT is None:
        _SERVER_TAKES_TRANSPORT = type(server)._attach.__code__.co_argcount > 1
    return _SERVER_TAKES_TRANSPORT


class SocketTransport(_bunpy.StreamCore):
    """A stream socket transport whose reads and writes run in C (see the module doc)."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        super().__init__(loop, sock, protocol)
        self._extra = dict(extra) if extra else {}
        self._extra["socket"] = _transport_socket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except socket.error:
                self._extra["peername"] = None
        self._protocol_connected = True
        self._server = server
        if server is not None:
            server._attach(self) if _server_takes_transport(server) else server._attach()
        loop._transports[self._sock_fd] = self
        base_events._set_nodelay(sock)
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start)  # after connection_made, as asyncio adds its reader
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._sock is not None and not self._closing:
            info.append("read=polling" if self.is_reading() else "read=idle")
            info.append(f"write=<bufsize={self.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()

    # -- asyncio.BaseTransport / ReadTransport / WriteTransport --------------------------------
    def get_extra_info(self, name, default=None):
        return self._extra.get(name, default)

    def is_closing(self):
        return self._closing

    def is_reading(self):
        return not self._closing and not self._paused

    def set_protocol(self, protocol):
        self._set_protocol(protocol)
        self._protocol_connected = True

    def get_protocol(self):
        return self._protocol

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self._closing or self._eof:
            return
        self._eof = True
        if not self.get_write_buffer_size():
            self._sock.shutdown(socket.SHUT_WR)

    def close(self):
        if self._closing:
            return
        self._closing = True
        if not self.get_write_buffer_size():
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self):
        self._force_close(None)

    # -- called from C ---------------------------------------------------------------------------
    def _on_eof(self):
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:  # else half-open: reading has stopped, writing goes on
            self.close()

    def _write_drained(self):
        """The queue emptied while a close or write_eof waited for it."""
        if self._closing:
            self._call_connection_lost(None)
        elif self._eof:
            self._sock.shutdown(socket.SHUT_WR)

    def _protocol_call_failed(self, exc, message):
        self._loop.call_exception_handler(
            {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
        )

    def _fatal_error(self, exc, message="Fatal error on transport"):
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
            )
        self._force_close(exc)

    def _force_close(self, exc):
        if self._conn_lost:
            return
        self._discard()
        self._closing = True
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._stop()  # the fd leaves the epoll set before it is closed
            self._sock.close()
            self._sock = None
            self._loop = None
            server = self._server
            if server is not None:
                server._detach(self) if _server_takes_transport(server) else server._detach()
                self._server = None


def _transport_socket(sock):
    from asyncio import trsock

    return trsock.TransportSocket(sock)

