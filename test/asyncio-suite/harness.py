"""Runs one module of CPython's own test.test_asyncio with bunpy's event loop as the loop
under test (or, with mode="stock", with asyncio's own loop, for comparison).

Loaded by test/asyncio-suite/run.ts inside a Bun process (the _bunpy module exists only
there). Writes one JSON object per line to `events_path`:
    {"ev": "info", ...}                            once, at the start
    {"ev": "start", "id": ...}                     before each test
    {"ev": "end", "id", "outcome", "time", ...}    after each test (outcome: pass, fail,
                                                   error, skip, xfail, xpass)
    {"ev": "done", "loops": {...}, ...}            at the end
A test that hangs is cut by faulthandler (the process exits; run.ts sees a "start" without
its "end" and runs the module again without it).
"""

import collections
import faulthandler
import importlib
import json
import os
import sys
import time
import traceback
import unittest

# test classes of test_events / test_sock_lowlevel / test_sendfile that run the stock loop
# on one selector each; replaced by one class running the loop under test
_PER_SELECTOR = ("SelectEventLoopTests", "PollEventLoopTests", "EPollEventLoopTests", "KqueueEventLoopTests")

_loop_counts = collections.Counter()
_loops_by_test = collections.defaultdict(collections.Counter)
_current_test = [None]


class _Events:
    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, **obj):
        os.write(self.fd, (json.dumps(obj, default=repr) + "\n").encode())


def _count_loops():
    """Counts every event loop created, by class (BaseEventLoop.__init__ runs once per loop)."""
    from asyncio import base_events

    orig = base_events.BaseEventLoop.__init__
    if getattr(orig, "_suite_counting", False):
        return

    def __init__(self, *args, **kwargs):
        name = type(self).__qualname__
        _loop_counts[name] += 1
        if _current_test[0] is not None:
            _loops_by_test[_current_test[0]][name] += 1
        return orig(self, *args, **kwargs)

    __init__._suite_counting = True
    base_events.BaseEventLoop.__init__ = __init__


def install_bunpy():
    """Makes every loop and policy asyncio hands out a bunpy one."""
    import asyncio
    import asyncio.events as events
    import asyncio.unix_events as unix_events

    from bunpy import _loop  # before the patch: BunpyEventLoop subclasses the stock class

    Loop, Policy = _loop.BunpyEventLoop, _loop.EventLoopPolicy
    for mod in (asyncio, unix_events):
        mod.SelectorEventLoop = Loop
        mod.DefaultEventLoopPolicy = Policy
        if hasattr(mod, "EventLoop"):  # 3.13+
            mod.EventLoop = Loop
    # the policy asyncio makes when none is set (set_event_loop_policy(None), as the test
    # modules' tearDownModule do) must be bunpy's too
    asyncio.set_event_loop_policy(None)
    events._init_event_loop_policy()
    checks = {"default_policy_after_reset": type(events._event_loop_policy).__qualname__}
    asyncio.set_event_loop_policy(Policy())
    loop = asyncio.new_event_loop()
    checks["new_event_loop"] = type(loop).__qualname__
    loop.close()
    loop = asyncio.SelectorEventLoop()
    checks["SelectorEventLoop()"] = type(loop).__qualname__
    loop.close()
    checks["asyncio.run"] = asyncio.run(_running_loop_type())
    ok = all(v in ("EventLoopPolicy", "BunpyEventLoop") for v in checks.values())
    if not ok:
        raise RuntimeError(f"bunpy loop not installed: {checks}")
    return checks


def stock_checks():
    """What asyncio hands out when nothing is patched (the comparison run)."""
    import asyncio
    import asyncio.events as events

    checks = {"policy": type(asyncio.get_event_loop_policy()).__qualname__}
    loop = asyncio.new_event_loop()
    checks["new_event_loop"] = type(loop).__qualname__
    checks["selector"] = type(loop._selector).__qualname__
    loop.close()
    checks["asyncio.run"] = asyncio.run(_running_loop_type())
    return checks


async def _running_loop_type():
    import asyncio

    return type(asyncio.get_running_loop()).__qualname__


def loop_under_test(mode):
    import asyncio
    import selectors

    if mode == "bunpy":
        import bunpy
        from bunpy import _loop

        def create_event_loop(self):
            loop = bunpy.new_event_loop()
            assert type(loop) is _loop.BunpyEventLoop, type(loop)
            return loop

    else:

        def create_event_loop(self):
            return asyncio.SelectorEventLoop(selectors.EpollSelector())

    return create_event_loop


def _without_child_watcher(cls):
    """setUp/tearDown of cls run with asyncio's child watcher API stubbed out.

    GetEventLoopTestsMixin.setUp attaches a SafeChildWatcher to its loop (a SIGCHLD handler:
    refused by bunpy's loop) and sets it on the policy (bunpy's policy has no child
    watchers); its tests are about get_event_loop/get_running_loop, not about children.
    """
    import asyncio
    from unittest import mock

    class NoWatcher:
        def attach_loop(self, loop):
            pass

        def close(self):
            pass

    orig_setUp, orig_tearDown = cls.setUp, cls.tearDown

    def start():
        patches = [mock.patch.object(asyncio, name, new) for name, new in (("SafeChildWatcher", NoWatcher), ("set_child_watcher", lambda watcher: None)) if hasattr(asyncio, name)]
        for p in patches:
            p.start()
        return patches

    def setUp(self):
        self._suite_patches = start()
        try:
            orig_setUp(self)
        except BaseException:
            for p in reversed(self._suite_patches):
                p.stop()
            raise

    def tearDown(self):
        try:
            orig_tearDown(self)
        finally:
            for p in reversed(self._suite_patches):
                p.stop()

    cls.setUp, cls.tearDown = setUp, tearDown


def adapt_module(mod, mode):
    """Replaces the per-selector test classes by one class running the loop under test."""
    notes = []
    if mode == "bunpy" and mod.__name__.endswith(".test_events"):
        for name in ("TestPyGetEventLoop", "TestCGetEventLoop"):
            if isinstance(getattr(mod, name, None), type):
                _without_child_watcher(getattr(mod, name))
                notes.append(f"{name}: SafeChildWatcher/set_child_watcher stubbed in setUp/tearDown (SIGCHLD handler refused)")
    template = getattr(mod, "EPollEventLoopTests", None)
    if isinstance(template, type):
        bases = []
        for b in template.__bases__:
            # UnixEventLoopTestsMixin only adds a SafeChildWatcher, which needs a SIGCHLD
            # handler (refused by bunpy's loop); the plain mixin is the loop's behaviour
            if b.__name__ == "UnixEventLoopTestsMixin":
                b = mod.EventLoopTestsMixin
            bases.append(b)
        cls = type("BunpyLoopTests", tuple(bases), {"create_event_loop": loop_under_test(mode), "__module__": mod.__name__})
        cls.__qualname__ = "BunpyLoopTests"
        mod.BunpyLoopTests = cls
        notes.append(f"BunpyLoopTests({', '.join(b.__name__ for b in bases)}) replaces {', '.join(n for n in _PER_SELECTOR if hasattr(mod, n))}")
        for name in _PER_SELECTOR:
            if hasattr(mod, name):
                delattr(mod, name)
    return notes


def _flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def _summary(err):
    """One line: the exception (type: message) and the last frame in a test file."""
    exc_type, exc, tb = err
    only = "".join(traceback.format_exception_only(exc_type, exc)).strip()
    line = " | ".join(l.strip() for l in only.splitlines() if l.strip())
    if len(line) > 400:
        line = line[:397] + "..."
    where = None
    for fs in traceback.extract_tb(tb):
        if "test_asyncio" in fs.filename:
            where = f"{os.path.basename(fs.filename)}:{fs.lineno} in {fs.name}"
    return line, where


class _Result(unittest.TestResult):
    def __init__(self, events):
        super().__init__()
        self.events = events
        self.t0 = {}
        self.problems = {}  # test id -> (outcome, [details])

    def startTest(self, test):
        super().startTest(test)
        _current_test[0] = test.id()
        self.events.write(ev="start", id=test.id())
        self.t0[test.id()] = time.monotonic()
        faulthandler.dump_traceback_later(self.test_timeout, exit=True, file=self.dump_file)

    def stopTest(self, test):
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)
        tid = test.id()
        outcome, details = self.problems.pop(tid, ("pass", []))
        loops = dict(_loops_by_test.pop(tid, {}))
        self.events.write(ev="end", id=tid, outcome=outcome, details=details, loops=loops, time=round(time.monotonic() - self.t0.pop(tid, time.monotonic()), 3))
        _current_test[0] = None

    def _note(self, test, outcome, detail=None):
        tid = test.id()
        prev, details = self.problems.get(tid, ("pass", []))
        rank = ["pass", "xfail", "skip", "xpass", "fail", "error"]
        if rank.index(outcome) >= rank.index(prev):
            prev = outcome
        if detail:
            details.append(detail)
        self.problems[tid] = (prev, details)

    def _detail(self, test, err, sub=None):
        line, where = _summary(err)
        return {"subtest": sub, "summary": line, "where": where, "traceback": "".join(traceback.format_exception(*err))}

    def addError(self, test, err):
        super().addError(test, err)
        if isinstance(test, unittest.case._SubTest):
            return self.addSubTest(test.test_case, test, err)
        if not hasattr(test, "_testMethodName"):  # setUpModule/setUpClass/tearDown...: an _ErrorHolder
            tid = test.id()
            self.events.write(ev="start", id=tid)
            self.events.write(ev="end", id=tid, outcome="error", details=[self._detail(test, err)], loops={}, time=0)
            return
        self._note(test, "error", self._detail(test, err))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._note(test, "fail", self._detail(test, err))

    def addSubTest(self, test, subtest, err):
        if err is None:
            return
        failure = issubclass(err[0], test.failureException)
        if failure:
            self.failures.append((subtest, self._exc_info_to_string(err, test)))
        else:
            self.errors.append((subtest, self._exc_info_to_string(err, test)))
        self._note(test, "fail" if failure else "error", self._detail(test, err, subtest._subDescription()))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if not hasattr(test, "_testMethodName"):  # a skipped class or module
            tid = test.id()
            self.events.write(ev="start", id=tid)
            self.events.write(ev="end", id=tid, outcome="skip", details=[{"summary": reason}], loops={}, time=0)
            return
        self._note(test, "skip", {"summary": reason})

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._note(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._note(test, "xpass")


def run_module(name, mode, events_path, skip_path=None, test_timeout=120.0, dump_path=None, only=None, sigint=True, preload=None):
    """Runs test.test_asyncio.<name>; mode "bunpy" (loop under test: bunpy's) or "stock"."""
    events = _Events(events_path)
    info = {"ev": "info", "module": name, "mode": mode, "python": sys.version.split()[0], "pid": os.getpid()}
    skip = {}
    if skip_path and os.path.exists(skip_path):
        with open(skip_path) as f:
            skip = json.load(f)
    if sigint:
        # as in a plain python: SIGINT raises KeyboardInterrupt. bunpy leaves SIGINT to Bun
        # (Python sees an unknown handler), so _thread.interrupt_main() -- test_runners'
        # interrupt tests -- would do nothing and those tests would wait for ever
        import signal

        signal.signal(signal.SIGINT, signal.default_int_handler)
        info["sigint"] = "default_int_handler"
    dump_file = open(dump_path or os.devnull, "a")
    faulthandler.enable(file=dump_file, all_threads=True)
    _count_loops()
    if preload:  # e.g. a fix to try, patched into bunpy's classes
        import runpy

        runpy.run_path(preload, run_name="__asyncio_suite_preload__")
        info["preload"] = preload
    if mode == "bunpy":
        info["checks"] = install_bunpy()
    else:
        info["checks"] = stock_checks()
    _loop_counts.clear()  # the checks' own loops
    try:
        mod = importlib.import_module(f"test.test_asyncio.{name}")
    except unittest.SkipTest as e:
        info["module_skipped"] = str(e)
        events.write(**info)
        events.write(ev="done", loops=dict(_loop_counts))
        return
    except ModuleNotFoundError as e:
        if e.name and e.name.endswith(name):
            info["absent"] = True
            events.write(**info)
            events.write(ev="done", loops=dict(_loop_counts))
            return
        raise
    info["notes"] = adapt_module(mod, mode)
    events.write(**info)
    loader = unittest.TestLoader()
    tests = [t for t in _flatten(loader.loadTestsFromModule(mod)) if t.id() not in skip]
    if only:
        tests = [t for t in tests if any(o in t.id() for o in only)]
    result = _Result(events)
    result.test_timeout = test_timeout
    result.dump_file = dump_file
    unittest.TestSuite(tests)(result)
    faulthandler.cancel_dump_traceback_later()
    events.write(ev="done", loops=dict(_loop_counts), testsRun=result.testsRun)
