"""Terminal input and output for `shipbot console`: reading a line without stalling the
bot's output, and printing what any terminal can show.

Kept apart from the session logic because it is all about threads, readline and
encodings, not about Slack.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import TextIO


async def read_line(stream: TextIO | None, prompt: str) -> str | None:
    """The next line (None at end of input), read on a daemon thread: the event loop keeps
    printing bot activity meanwhile, and Ctrl-C never waits for a blocked ``input()``.
    ``stream=None`` means the terminal, through ``input()`` for line editing."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | None] = loop.create_future()
    if stream is None:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - imported, input() gets line editing and history

    def resolve(line: str | None, error: Exception | None) -> None:
        if not future.done():  # else nobody waits any more (Ctrl-C)
            future.set_exception(error) if error else future.set_result(line)

    def work() -> None:
        line, error = None, None
        try:
            raw = input(prompt) + "\n" if stream is None else stream.readline()
            line = raw.rstrip("\r\n") if raw else None
        except EOFError:
            pass
        except Exception as exc:  # surfaces in the event loop, not on this thread
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting
            loop.call_soon_threadsafe(resolve, line, error)

    threading.Thread(target=work, name="console-input", daemon=True).start()
    return await future


def typed_so_far() -> str:
    """What is typed at the prompt so far (readline), to redraw it below bot output."""
    try:
        import readline
    except ImportError:  # no readline on this platform: the typing is still there, unseen
        return ""
    return readline.get_line_buffer()


def encodable(text: str, out: TextIO) -> str:
    """Never crash on a terminal that cannot show '→' or emoji: replace them instead."""
    encoding = getattr(out, "encoding", None)
    return text.encode(encoding, "replace").decode(encoding) if encoding else text
