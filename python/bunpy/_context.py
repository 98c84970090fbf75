"""Set-up run inside every new context (see shim/context.c)."""

import sys
from importlib.machinery import ExtensionFileLoader, PathFinder

# C accelerators that are unsafe in a subinterpreter with its own GIL on some releases
# (fact 3 in docs/architecture.md). Refusing them makes the stdlib fall back to its pure-Python versions
# (datetime -> _pydatetime, decimal -> _pydecimal, zoneinfo -> zoneinfo._zoneinfo).
#   3.12.x: single-phase _decimal, _datetime, _zoneinfo double-free in a second interpreter;
#           _tracemalloc loads in one but hooks the allocators of the whole process and keeps
#           its tables under "the" GIL, so tracing while other interpreters run corrupts them
#           (free(): invalid pointer, test/teardown-races.test.ts). 3.13 refuses it itself.
#   3.13.0: _datetime races when isolated interpreters start or stop concurrently; _zoneinfo
#           is refused with it: it needs _datetime's C API and would fail with AttributeError
#           (not the ImportError that makes zoneinfo fall back to its pure-Python version)
def unsafe_accelerators(version=sys.version_info):
    if version[:2] == (3, 12):
        return {"_decimal", "_datetime", "_zoneinfo", "_tracemalloc"}
    if version[:3] == (3, 13, 0):
        return {"_datetime", "_zoneinfo"}
    return set()


# 3.12.x: merely *trying* a single-phase extension in a subinterpreter (CPython refuses it
# with ImportError) corrupts the runtime's extension cache, and a later import of the same
# module elsewhere double-frees (seen with 3.12.1 and _testsinglephase). So on 3.12 an
# owngil context loads only the extension modules known to be multi-phase (these are the
# stdlib's, checked on 3.12.1); any other extension is refused before it is loaded.
MULTI_PHASE_312 = frozenset("""
_asyncio _bisect _blake2 _bz2 _codecs_cn _codecs_hk _codecs_iso2022 _codecs_jp _codecs_kr
_codecs_tw _contextvars _crypt _csv _elementtree _hashlib _heapq _json _lsprof _lzma _md5
_multibytecodec _multiprocessing _opcode _pickle _posixshmem _posixsubprocess _queue _random
_sha1 _sha2 _sha3 _socket _sqlite3 _ssl _statistics _struct _testinternalcapi _testmultiphase
_uuid _xxinterpchannels _xxsubinterpreters array audioop binascii cmath fcntl grp math mmap
nis pyexpat resource select spwd syslog termios unicodedata xxlimited xxlimited_35 xxsubtype zlib
""".split())


class RefuseUnsafeExtensions:
    """A sys.meta_path finder, first in line, that refuses unsafe extension modules."""

    def __init__(self, names, only_known_multi_phase):
        self.names = frozenset(names)
        self.only_known = only_known_multi_phase

    def find_spec(self, name, path=None, target=None):
        if name in self.names:
            raise ImportError(f"bunpy: {name} is not safe in a subinterpreter on this Python", name=name)
        if not self.only_known or name in MULTI_PHASE_312:
            return None
        spec = PathFinder.find_spec(name, path)
        if spec is not None and isinstance(spec.loader, ExtensionFileLoader):
            raise ImportError(
                f"bunpy: the extension module {name} is not known to support subinterpreters, and on "
                f"Python 3.12 trying one can corrupt the process; use a context with mode 'worker' "
                f"(or Python 3.13) for it",
                name=name,
            )
        return None


class AfterImport:
    """A sys.meta_path finder that runs `then(module)` once `name` has been imported: for
    patches that should not import their module in every context (that would slow their
    start). It sits before PathFinder, which would find the module, and leaves after one use."""

    def __init__(self, name, then):
        self.name = name
        self.then = then

    def find_spec(self, name, path=None, target=None):
        if name != self.name:
            return None
        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            self.then(module)

        spec.loader.exec_module = exec_module
        return spec


def when_imported(name, then):
    """then(module) now if `name` is imported, else right after its import (once)."""
    module = sys.modules.get(name)
    if module is not None:
        then(module)
    elif not any(isinstance(f, AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, AfterImport(name, then))


policy_pending = False


def _asyncio_imported(_asyncio):
    """Installs bunpy's policy: on a context's thread, asyncio.get_event_loop() is the
    context's own loop."""
    global policy_pending
    loop_module = sys.modules.get("bunpy._loop")
    if loop_module is not None and not hasattr(loop_module, "install_contexts_policy"):
        policy_pending = True  # bunpy._loop is importing asyncio: it installs at its end
        return
    from bunpy import _loop

    _loop.install_contexts_policy()


def install_loop_policy():
    when_imported("asyncio", _asyncio_imported)


def _real_dirs(paths):
    import os

    return [os.path.realpath(p) for p in paths if p]


def setup(owngil, policy=None):
    """Prepares a new context; returns the sandbox policy for the C audit hook (or None)."""
    if policy is not None:
        policy = dict(policy)
        if policy.get("files") is not None:
            policy["files"] = _real_dirs(policy["files"])
            # Python reads its own files (imports): keep them readable
            import os

            here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            read = [sys.prefix, sys.base_prefix, sys.exec_prefix, here] + sys.path + (policy.get("read_files") or [])
            policy["read_paths"] = _real_dirs(read)
    if policy is not None and policy.get("env") is not None:
        keep_environment(policy["env"], owngil)
    if owngil:
        names = unsafe_accelerators()
        strict = sys.version_info[:2] == (3, 12)
        if names or strict:
            sys.meta_path.insert(0, RefuseUnsafeExtensions(names, strict))
            from bunpy import _guard  # the same check where loads by file path pass too

            _guard.install(names, MULTI_PHASE_312 if strict else None)
    else:
        track_threads()
    install_loop_policy()
    from bunpy import _signals  # SIGINT/SIGTERM handlers in contexts

    _signals.install()
    return policy


def keep_environment(names, owngil):
    """The sandbox's `env` rule: the context sees only these environment variables. An
    owngil context edits its interpreter's own copies (os.environ and posix.environ) without
    unsetenv, which would change Bun's environment; the programs it starts get the same
    (shim/sandbox.c passes environment() for env=None). A process context's host owns its
    environment: there it is cleared for real."""
    import os
    import posix

    keep = {os.fsencode(n) for n in names}
    if owngil:
        for table in (os.environ._data, posix.environ):
            for k in [k for k in table if k not in keep]:
                del table[k]
        # os.environ's writes call putenv/unsetenv, which change the C environment: the whole
        # process's (an LD_PRELOAD set here would reach every program Bun starts). Here they
        # change this interpreter's copy only (its children get it, see environment());
        # os.putenv and os.unsetenv themselves are refused by the audit hook (rule: env).
        os._Environ.__setitem__ = _environ_set
        os._Environ.__delitem__ = _environ_delete
    else:
        for k in [k for k in os.environb if k not in keep]:
            del os.environb[k]


def _environ_set(self, key, value):
    self._data[self.encodekey(key)] = self.encodevalue(value)


def _environ_delete(self, key):
    try:
        del self._data[self.encodekey(key)]
    except KeyError:
        raise KeyError(key) from None


def environment():
    """The environment a program started from this context gets: its os.environ."""
    import os

    return [k + b"=" + v for k, v in os.environb.items()]


# Worker contexts share the main interpreter's threading module: the threads a context
# starts (and the threads those start) carry the ident of its thread, so that its close
# joins them and no others.
_owner = None  # a threading.local: .ident of the context thread this thread works for


def track_threads():
    """Worker mode: marks threads with the context that started them (once per process)."""
    global _owner
    import threading

    if _owner is None:
        _owner = threading.local()
    _owner.ident = threading.get_ident()
    # the context thread is a _DummyThread to threading (daemon), and threads inherit their
    # starter's daemon flag: make them non-daemon by default, as under a main thread
    threading.current_thread()._daemonic = False
    if getattr(threading.Thread.start, "__bunpy_track__", False):
        return
    start, bootstrap = threading.Thread.start, threading.Thread._bootstrap_inner
    import _bunpy

    def tracked_start(self):
        # before 3.12 starting a thread raises no audit event: maxThreads is checked here
        if sys.version_info < (3, 12) and _bunpy.refused("threads"):
            raise PermissionError("bunpy sandbox: threading.Thread.start is refused (rule: maxThreads)")
        owner = getattr(_owner, "ident", None)
        if owner is not None:
            self._bunpy_owner = owner
        return start(self)

    def tracked_bootstrap_inner(self):
        owner = getattr(self, "_bunpy_owner", None)
        if owner is not None:
            _owner.ident = owner
        return bootstrap(self)

    tracked_start.__bunpy_track__ = True
    tracked_start.__wrapped__ = start
    threading.Thread.start = tracked_start
    threading.Thread._bootstrap_inner = tracked_bootstrap_inner


def _report(stage):
    """An error in one teardown stage is printed; the next stage still runs. An interrupt
    (the close watchdog: the grace period is over) skips to the next stage too."""
    import traceback

    e = sys.exc_info()[1]
    if not isinstance(e, KeyboardInterrupt):
        print(f"bunpy: closing a context: {stage} failed:", file=sys.stderr)
        traceback.print_exception(e, file=sys.stderr)


def _join(threads):
    # short waits, so that the close watchdog's interrupt can land between them
    for t in threads:
        while t.is_alive():
            t.join(0.05)


def _stop_executors(threads):
    """Shuts down the ThreadPoolExecutors whose workers are among `threads` (what the
    executors' exit hook does at interpreter shutdown): their queued work still runs."""
    cf = sys.modules.get("concurrent.futures.thread")
    if cf is None:
        return
    for t in threads:
        if getattr(t, "_target", None) is cf._worker and t._args:
            executor = t._args[0]()
            if executor is not None:
                executor.shutdown(wait=False)


def _join_threads(threading, owngil):
    """Joins the context's threads as interpreter shutdown does: owngil, every thread of the
    interpreter, daemon ones included (an interpreter cannot end while one runs); worker
    mode, the non-daemon threads the context started (daemon ones belong to the process,
    as in any Python program)."""
    if threading is None:
        return
    me = threading.get_ident()
    if owngil:
        # threading._shutdown's exit hooks (concurrent.futures registers one: it wakes its
        # idle workers so they can end). Not threading._shutdown() itself: the interpreter
        # calls that again when it ends, and 3.12 asserts on a second call.
        hooks = getattr(threading, "_threading_atexits", [])
        threading._SHUTTING_DOWN = True
        while hooks:
            hooks.pop()()
        others = [
            t
            for t in threading.enumerate()
            # not dummies: threads threading did not start (worker contexts' threads among them);
            # daemon threads too: the interpreter cannot end while one of them runs
            if t.ident != me and t is not threading.main_thread() and not isinstance(t, threading._DummyThread)
        ]
    else:
        others = _started_by(threading, me)
        _stop_executors(others)
    _join(others)


def _started_by(threading, me):
    """The live non-daemon threads a worker context (thread `me`) started, itself excluded."""
    return [t for t in threading.enumerate() if t.ident != me and getattr(t, "_bunpy_owner", None) == me and not t.daemon]


def count_started(ident):
    """maxThreads in a worker context (thread `ident`): the live threads it started, and
    those started, daemons included (the one being started is not counted: no ident yet)."""
    import threading

    return sum(1 for t in threading.enumerate() if getattr(t, "_bunpy_owner", None) == ident and t.ident not in (None, ident))


def _warn_running(threading):
    """Worker mode, the joins were cut short (close()'s grace period is over): say which
    threads run on."""
    me = threading.get_ident()
    left = [t.name for t in _started_by(threading, me)]
    if left:
        print(
            f"bunpy: a worker context was closed while threads it started still ran ({', '.join(left)}); they keep "
            "running in the main interpreter, and py.close() waits for them as Python does at exit",
            file=sys.stderr,
        )


def teardown(owngil=False, main=None):
    """Runs on the context thread just before its interpreter or thread state ends (after
    its loop was closed): what interpreter shutdown does, in the same order."""
    threading = sys.modules.get("threading")
    try:
        _join_threads(threading, owngil)
    except BaseException:
        _report("joining its threads")
        if not owngil:  # owngil: ending the interpreter says so
            _warn_running(threading)
    if owngil:
        import atexit

        try:
            atexit._run_exitfuncs()
        except BaseException:
            _report("its atexit handlers")
    elif main is not None:
        # worker mode: the context's globals go now, and what they kept alive through
        # reference cycles (sockets, files) is collected here rather than whenever the main
        # interpreter's collector runs
        try:
            main.__dict__.clear()
            import gc

            gc.collect()
        except BaseException:
            _report("releasing its globals")
    if not owngil and threading is not None and isinstance(threading.current_thread(), threading._DummyThread):
        # before 3.13 nothing removes the _DummyThread of a thread threading did not start:
        # a worker context's would stay in threading.enumerate() of the main interpreter
        if not hasattr(getattr(threading, "_thread_local_info", None), "_track_dummy_thread_ref"):
            with threading._active_limbo_lock:
                threading._active.pop(threading.get_ident(), None)
    local = getattr(threading, "_thread_local_info", None)
    # 3.13: a _DummyThread made for this thread is dropped through a thread-local whose
    # __del__ needs the threading module alive; drop it now rather than during teardown.
    if local is not None and hasattr(local, "_track_dummy_thread_ref"):
        del local._track_dummy_thread_ref


def shutdown_without_finalize():
    """py.close() where Py_FinalizeEx would crash: what a normal shutdown does for users."""
    import atexit

    _join_threads(sys.modules.get("threading"), True)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
