"""Reading JSON from a REST provider (GitHub, GitLab): one body shape check for all.

A provider supplies ``_call`` (the request, with its error mapping) and ``_unexpected``
(what to say when the answer is not the API's JSON: usually a base_url pointing at the
web UI or a proxy instead of the API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from integrations.base import IntegrationError


class JsonReads:
    # What the provider defines: the request, and the error for a body of the wrong shape.
    _call: Callable[..., Awaitable[httpx.Response]]
    _unexpected: Callable[[str, str], IntegrationError]

    async def _json(self, path: str, missing: str, **params: str) -> Any:
        response = await self._call("GET", path, missing, params=params)
        try:
            return response.json()
        except ValueError:
            raise self._unexpected(path, "not JSON") from None

    async def _object(self, path: str, missing: str, **params: str) -> dict[str, Any]:
        data = await self._json(path, missing, **params)
        if not isinstance(data, dict):
            raise self._unexpected(path, "not a JSON object")
        return data

    async def _list(self, path: str, missing: str, **params: str) -> list[Any]:
        data = await self._json(path, missing, **params)
        if not isinstance(data, list):
            raise self._unexpected(path, "not a JSON list")
        return data
