"""bunpy's stream socket transport (TCP, Unix): the cold half, over _bunpy.StreamCore.

StreamCore (shim/transport.c, transmit.c) does the hot half in C — reading until EAGAIN
into Protocol.data_received or a BufferedProtocol's buffer, write()/writelines() gathered
until the end of the loop iteration and sent with one send (or at once when large), the
queue, the water marks, pause/resume — on the fd registered once, edge-triggered, in the
loop's reactor. What is left here mirrors asyncio's _SelectorSocketTransport: making the
connection, closing, aborting, errors and connection_lost, extra info.
"""

import socket
import warnings
from asyncio import base_events, constants, futures, transports, trsock
from asyncio.log import logger

import _bunpy

# Server._attach/_detach take the transport on newer Pythons (3.12.? and 3.13)
_SERVER_TAKES_TRANSPORT = None


def _server_takes_transport(server):
    global _SERVER_TAKES_TRANSPORT
    if _SERVER_TAKES_TRANSPORT is None:
        _SERVER_TAKES_TRANSPORT = type(server)._attach.__code__.co_argcount > 1
    return _SERVER_TAKES_TRANSPORT


class SocketTransport(transports._FlowControlMixin):
    """A stream socket transport whose reads and writes run in C (see the module doc).

    An asyncio.Transport whose hot methods are those of its C core (bound per instance, so
    transport.write(data) is one C call); the core calls back the methods below."""

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None, tcp=None):
        # (not _FlowControlMixin.__init__: the water marks live in the C core; the class
        # is there for isinstance checks, e.g. loop.sendfile's fallback)
        self._extra = {} if extra is None else extra
        core = self._core = _bunpy.StreamCore(loop, sock, protocol, self)
        self.write = core.write
        self.writelines = core.writelines
        self.pause_reading = core.pause_reading
        self.resume_reading = core.resume_reading
        self.get_write_buffer_size = core.get_write_buffer_size
        self.set_write_buffer_limits = core.set_write_buffer_limits
        self.get_write_buffer_limits = core.get_write_buffer_limits
        self._loop = loop
        self._sock = sock
        self._sock_fd = core._sock_fd
        self._protocol = protocol
        self._extra["socket"] = trsock.TransportSocket(sock)
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
        if tcp is None:  # (bunpy._connect knows the family already)
            base_events._set_nodelay(sock)
        elif tcp:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(core._start)  # after connection_made, as asyncio adds its reader
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._core._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._sock is not None and not self._core._closing:
            info.append("read=polling" if self.is_reading() else "read=idle")
            info.append(f"write=<bufsize={self.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        if getattr(self, "_sock", None) is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._core._stop()
            self._sock.close()

    @property
    def _closing(self):
        return self._core._closing

    @property
    def _conn_lost(self):
        return self._core._conn_lost

    @property
    def _protocol_paused(self):
        return self._core._protocol_paused

    # -- asyncio.BaseTransport / ReadTransport / WriteTransport --------------------------------
    def is_closing(self):
        return self._core._closing

    def is_reading(self):
        core = self._core
        return not core._closing and not core._paused

    def set_protocol(self, protocol):
        self._core._set_protocol(protocol)
        self._protocol = protocol
        self._protocol_connected = True

    def get_protocol(self):
        return self._protocol

    def can_write_eof(self):
        return True

    def write_eof(self):
        core = self._core
        if core._closing or core._eof:
            return
        core._flush()  # gathered writes go before the EOF (see shim/transmit.c)
        core._eof = True
        if not core.get_write_buffer_size():
            self._sock.shutdown(socket.SHUT_WR)

    def close(self):
        core = self._core
        if core._closing:
            return
        core._flush()  # gathered writes go before the close
        core._closing = True
        if not core.get_write_buffer_size():
            core._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self):
        if not self._core._conn_lost:
            self._core._flush()  # what an immediate write would have sent already
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
        if self._core._closing:
            self._call_connection_lost(None)
        elif self._core._eof:
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
        core = self._core
        if core._conn_lost:
            return
        core._discard()
        core._closing = True
        core._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        if self._sock is None:
            return
        if not self._core._conn_lost:  # (a close that waited for the queue) later writes are dropped
            self._core._conn_lost = 1
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._core._stop()  # the fd leaves the epoll set before it is closed
            self._sock.close()
            self._sock = None
            self._protocol = None
            self._loop = None
            self._core._release()
            server = self._server
            if server is not None:
                server._detach(self) if _server_takes_transport(server) else server._detach()
                self._server = None


