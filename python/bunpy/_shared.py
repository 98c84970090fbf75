"""bunpy.shared: the key-value store shared by JS and every interpreter of the process
(shim/shared.c). Values are stored by copy, as they cross between JS and Python."""

import _bunpy


class Shared:
    """Atomic operations on one process-wide store of string keys (see docs/data.md)."""

    __slots__ = ()

    def get(self, key, default=None):
        """The value stored under `key` (a new copy), or `default`."""
        return _bunpy.shared_get(key, default)

    def set(self, key, value):
        """Stores a copy of `value` (None, bool, int, float, str, bytes, list, tuple, dict,
        set, datetime; TypeError for anything else)."""
        _bunpy.shared_set(key, value)

    def incr(self, key, delta=1):
        """Adds `delta` atomically (a missing key counts as 0) and returns the new value."""
        return _bunpy.shared_incr(key, delta)

    def compare_and_set(self, key, expected, value):
        """Stores `value` only if the current value equals `expected` (a missing key equals
        None); returns whether it did."""
        return _bunpy.shared_cas(key, expected, value)

    def delete(self, key):
        """Removes `key`; returns whether it was there."""
        return _bunpy.shared_delete(key)

    def keys(self):
        return _bunpy.shared_keys()

    def __contains__(self, key):
        return key in _bunpy.shared_keys()

    def __repr__(self):
        return "<bunpy.shared>"


shared = Shared()
