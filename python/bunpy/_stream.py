"""Streams between JS and Python (docs/data.md).

Python -> JS: ``ctx.iterate(module, fn, ...)`` calls the function in the context (as
``ctx.call`` does: the context resolves the name) and passes the generator it got back to
``begin``, which keeps its iterator (or async iterator) under an id; JS then
pulls batches with ``take`` and ends early with ``close``. A batch ends at ``n`` items or
once ~1 MiB of bytes/str items were gathered, so big chunks do not pile up. Python only
advances while JS pulls (back-pressure): JS asks for the next batch while it consumes one,
so Python is one batch ahead at most. An exception raised
after some items of a batch were gathered is kept and raised at the next pull, so JS
receives every item produced before it, then the error.

JS -> Python: ``py.iter(x)`` arrives as ``JSIterator`` / ``JSAsyncIterator`` (made by the C
codec through ``bunpy._codec.js_iterator``), which pull batches from a JS function
registered under a private name.
"""

import itertools
from itertools import islice
import sys

import _bunpy

_streams = {}
_errors = {}
_ids = itertools.count(1)
_BUDGET = 1 << 20


_SIZED = (bytes, str, bytearray, memoryview)


def _size(item):
    return len(item) if type(item) in _SIZED else 0


def begin(result, n):
    """Keeps the iterator of `result` (what the streamed call returned, passed back by JS)
    and returns the first batch: [id, items, done]."""
    if hasattr(result, "__aiter__") and not hasattr(result, "__iter__"):
        it = result.__aiter__()
        sid = next(_ids)
        _streams[sid] = it
        return _afirst(sid, it, n)
    it = iter(result)
    sid = next(_ids)
    _streams[sid] = it
    items, done = _take(sid, it, n)
    return [sid, items, done]


async def _afirst(sid, it, n):
    items, done = await _atake(sid, it, n)
    return [sid, items, done]


def _take(sid, it, n):
    # list.extend(islice(...)) pulls at C speed and keeps the items gathered before an
    # exception; steps grow for small items and stay at one for bytes/str, so the ~1 MiB
    # budget holds for streams of big chunks
    items = []
    size = 0
    step = 1
    try:
        while True:
            k = len(items)
            want = min(step, n - k)
            items.extend(islice(it, want))
            got = len(items) - k
            if got < want:
                break  # exhausted
            if type(items[k]) in _SIZED:
                size += sum(map(_size, items[k:]))
                if size >= _BUDGET:
                    return items, False
                step = 1
            elif step < 4096:
                step *= 4
            if len(items) >= n:
                return items, False
    except BaseException as e:
        if not items:
            _streams.pop(sid, None)
            raise
        _errors[sid] = e  # raised at the next pull, after the items gathered before it
        return items, False
    _streams.pop(sid, None)
    return items, True


async def _atake(sid, it, n):
    items = []
    size = 0
    try:
        while len(items) < n and size < _BUDGET:
            try:
                item = await it.__anext__()
            except StopAsyncIteration:
                _streams.pop(sid, None)
                return items, True
            items.append(item)
            size += _size(item)
    except BaseException as e:
        if not items:
            _streams.pop(sid, None)
            raise
        _errors[sid] = e
    return items, False


def take(sid, n):
    """The next batch of stream `sid`: [items, done]."""
    e = _errors.pop(sid, None)
    if e is not None:
        _streams.pop(sid, None)
        raise e
    it = _streams.get(sid)
    if it is None:
        return [[], True]
    if hasattr(it, "__anext__"):
        return _atake_list(sid, it, n)
    items, done = _take(sid, it, n)
    return [items, done]


async def _atake_list(sid, it, n):
    items, done = await _atake(sid, it, n)
    return [items, done]


def close(sid):
    """JS ended the stream early: closes the generator (its finally blocks run)."""
    _errors.pop(sid, None)
    it = _streams.pop(sid, None)
    if it is None:
        return None
    if hasattr(it, "aclose"):
        return it.aclose()
    if hasattr(it, "close"):
        it.close()
    return None


def open_streams():
    """Streams of this interpreter JS has not finished (for leak tests)."""
    return len(_streams)


# ---- JS -> Python -----------------------------------------------------------------------


_NOTHING = object()  # _JSSource._take: the batch is used up


class _JSSource:
    """What a py.iter(x) source is in Python: batches pulled from JS by name, one at a time."""

    __slots__ = ("_name", "_items", "_pos", "_done", "__weakref__")

    def __init__(self, name):
        self._name = name
        self._items = []
        self._pos = 0
        self._done = False

    def _take(self):
        """The next item of the batch in hand, or _NOTHING."""
        if self._pos < len(self._items):
            item = self._items[self._pos]
            self._pos += 1
            return item
        return _NOTHING

    def _refill(self, items, done):
        """Takes a batch from JS; its first item, or _NOTHING at the end."""
        self._items = items
        self._pos = 0
        self._done = done or not items
        return self._take()

    def _stop(self):
        """Stops pulling; True when JS must be told (its return() runs)."""
        if self._done:
            return False
        self._done = True
        self._items = []
        return True

    def __del__(self):
        # dropped before its end: JS lets the source go (best effort: a message, since JS
        # cannot be called from wherever a __del__ runs)
        if not self._done:
            try:
                _bunpy.send("bunpy.iter.close", self._name)
            except BaseException:
                pass


class JSIterator(_JSSource):
    """A JS iterable passed with py.iter(x): each batch is pulled from JS on demand."""

    __slots__ = ()

    def __iter__(self):
        return self

    def __next__(self):
        item = self._take()
        if item is _NOTHING and not self._done:
            item = self._refill(*_bunpy.call(self._name, 0))
        if item is _NOTHING:
            raise StopIteration
        return item

    def close(self):
        """Stops pulling: the JS iterator's return() runs."""
        if self._stop():
            _bunpy.call(self._name, 1)

    def __repr__(self):
        return f"<JS iterator {self._name}>"


class JSAsyncIterator(_JSSource):
    """A JS async iterable or ReadableStream passed with py.iter(x) (contexts)."""

    __slots__ = ()

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = self._take()
        if item is _NOTHING and not self._done:
            import bunpy

            item = self._refill(*(await bunpy.async_call(self._name, 0)))
        if item is _NOTHING:
            raise StopAsyncIteration
        return item

    async def aclose(self):
        if self._stop():
            import bunpy

            await bunpy.async_call(self._name, 1)

    def __repr__(self):
        return f"<JS async iterator {self._name}>"


def js_iterator(name, is_async):
    return JSAsyncIterator(name) if is_async else JSIterator(name)
