"""Helpers the C codec calls for values that are rare enough to do in Python."""

import traceback
from datetime import datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


def date_from_ms(ms):
    """A JS Date (milliseconds since the epoch) as an aware UTC datetime."""
    # JS times are whole milliseconds. Given as an int, timedelta is exact; given as a
    # float, the pure-Python datetime (subinterpreters) loses a millisecond far from 1970.
    return _EPOCH + timedelta(milliseconds=int(ms) if ms == int(ms) else ms)


def date_to_ms(dt):
    """Milliseconds since the epoch, rounded down like JS Date; naive means local time."""
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        try:
            dt = dt.astimezone()
        except (OverflowError, ValueError, OSError):
            # outside what the C library's local time covers (e.g. datetime.min):
            # use today's local offset
            dt = dt.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return float((dt - _EPOCH) // _MS)


def format_exception(exc):
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def clear_frames(exc):
    """Frees the local variables of the finished frames in a kept exception's tracebacks
    (its cause, context and group members too): JS may hold the error for a long time, and
    formatting it later needs only file names and line numbers."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        todo.append(e.__cause__)
        todo.append(e.__context__)
        todo.extend(getattr(e, "exceptions", ()))
