"""The hang guard turns a test that waits for ever into a failure naming where it waited."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.hang_guard import guarded


async def test_a_hung_test_fails_with_the_stacks_of_its_tasks(capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    async def busy_background() -> None:
        while True:  # noqa: ASYNC110 - keeps the loop busy, as a running engine does
            await asyncio.sleep(0)

    async def waits_for_ever() -> None:
        await asyncio.Event().wait()

    spinner = asyncio.create_task(busy_background(), name="spinner")
    try:
        with pytest.raises(pytest.fail.Exception, match="hung: still running after 0 s"):
            await guarded(waits_for_ever, "tests/x.py::test_x", limit=0.2)()
    finally:
        spinner.cancel()
    printed = capsys.readouterr().out
    assert "tests/x.py::test_x still running" in printed
    assert "waits_for_ever" in printed and "spinner" in printed


async def test_a_hung_test_that_swallows_the_cancel_still_fails() -> None:
    async def waits_for_ever_and_ignores_cancels() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # as a careless stop() might
            await asyncio.Event().wait()

    with pytest.raises(pytest.fail.Exception, match="hung"):
        await guarded(waits_for_ever_and_ignores_cancels, "t", limit=0.1)()


async def test_a_test_that_ends_in_time_is_untouched() -> None:
    async def quick(value: int) -> int:
        return value

    assert await guarded(quick, "q", limit=0.05)(value=7) == 7
    await asyncio.sleep(0.2)  # past the limit: its timer, cancelled, must not cancel us
