"""``shipbot db revision``: write a new migration script (a developer's command, kept
apart from ``migrations`` so that the store's engine and its migrations do not import
each other)."""

from __future__ import annotations

import tempfile
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from bot.store import migrations
from bot.store.db import create_engine, create_schema


def _next_revision_id(config: Config) -> str:
    """Numbered revisions ("0002") sort like their history; two branches adding the same
    number clash loudly instead of forking the history."""
    heads = ScriptDirectory.from_config(config).get_heads()
    numbers = [int(head) for head in heads if head.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"


async def new_revision(message: str, autogenerate: bool = False) -> str:
    """Write a migration script into versions/; with ``autogenerate``, filled with the
    difference between the models and a scratch SQLite database migrated to head."""
    config = migrations.alembic_config()
    rev_id = _next_revision_id(config)
    if not autogenerate:
        return _script_path(command.revision(config, message=message, rev_id=rev_id))
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{scratch}/scratch.db")
        try:
            await create_schema(engine)
            async with engine.begin() as conn:
                script = await conn.run_sync(lambda c: command.revision(
                    migrations.alembic_config(c), message=message, autogenerate=True,
                    rev_id=rev_id))
        finally:
            await engine.dispose()
    return _script_path(script)


def _script_path(script: Any) -> str:
    scripts = script if isinstance(script, list) else [script]
    return ", ".join(s.path for s in scripts if s is not None)
