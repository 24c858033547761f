"""A hung test fails, saying where everything waited, instead of outliving CI's time limit.

pytest-timeout's signal method raises into whatever runs when the alarm comes. With an
event loop busy with background tasks, that is often one of those tasks, which keeps the
exception to itself, and the test waits on for ever (one CI run stopped after 90 minutes
at 1,890 of 1,912 tests). So: each async test has a watchdog on its own loop that prints
every task's stack and cancels the test; pytest-timeout (thread method, see pyproject)
stays the backstop that ends a worker stuck anywhere else; and a worker that hangs while
exiting (a thread that never ends) prints its threads and exits after a minute.
"""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import pytest

WATCHDOG_SECONDS = 150.0  # below pytest-timeout's 180 s, so teardown has time to run
EXIT_GRACE_SECONDS = 60


def guarded(test: Callable[..., Awaitable[Any]], name: str,
            limit: float = WATCHDOG_SECONDS) -> Callable[..., Awaitable[Any]]:
    """The async test, cancelled with every task's stack printed if it outlasts ``limit``."""

    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        fired: list[bool] = []
        handle = asyncio.get_running_loop().call_later(limit, _hung, task, name, limit, fired)
        try:
            result = await test(*args, **kwargs)
        except asyncio.CancelledError:
            if fired:
                _fail(name, limit)
            raise
        finally:
            handle.cancel()
        if fired:  # the test swallowed the cancel: it hung all the same
            _fail(name, limit)
        return result

    return run


def _fail(name: str, limit: float) -> NoReturn:
    pytest.fail(f"{name} hung: still running after {limit:.0f} s (every task's stack is "
                "printed above)", pytrace=True)


def _hung(task: asyncio.Task[Any], name: str, limit: float, fired: list[bool]) -> None:
    fired.append(True)
    print(f"hang guard: {name} still running after {limit:.0f} s; its tasks:")
    for each in asyncio.all_tasks():
        print(f"--- task {each.get_name()}{' (the test)' if each is task else ''}")
        print("\n".join(awaiting(each)))
    task.cancel("hang guard")


def awaiting(task: asyncio.Task[Any]) -> list[str]:
    """Where a task waits: its whole chain of awaits (``Task.get_stack`` stops at the top)."""
    lines, step = [], task.get_coro()
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "ag_frame", None) \
            or getattr(step, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            lines.append(f"  {code.co_filename}:{frame.f_lineno} in {code.co_qualname}")
        step = getattr(step, "cr_await", None) or getattr(step, "ag_await", None) \
            or getattr(step, "gi_yieldfrom", None)
    return lines


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.obj = guarded(item.obj, item.nodeid)


def pytest_unconfigure(config: pytest.Config) -> None:
    """An xdist worker's last hook: from here on it only exits, which must not take long.
    (Not elsewhere: a process that runs pytest in-process, as mutmut does, goes on.)"""
    if hasattr(config, "workerinput"):
        faulthandler.dump_traceback_later(EXIT_GRACE_SECONDS, exit=True)
