"""Destination kind ``http``: the generic webhook, exactly contract §3.

``POST {url}`` with ``{"store_id", "batch_id", "records": [envelope, ...]}``,
``Idempotency-Key: {batch_id}``, and ``Authorization: Bearer <token>`` when
``token_file`` is set. The body is canonical JSON (sorted keys), so a resend of
the frozen batch is byte-identical and a receiver may compare bodies.

- 2xx: delivered, except the ids in an optional ``{"rejected": [{"id", "error"}]}``.
- connection errors, timeouts, 408, 425, 429, 5xx: ``RetryableError`` (with
  ``Retry-After``); the loop sends the same batch again.
- any other 4xx: ``PermanentError`` with the status and the first KiB of the
  answer; the loop splits the batch to find the refused record(s).
"""

from __future__ import annotations

from json.encoder import encode_basestring as encode_json_str
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field, HttpUrl

from agent.config import DestinationBase, read_secret
from agent.destinations._httpcommon import (
    PooledAdapter,
    dumps,
    json_or_empty,
    raise_for_status,
    send_request,
)
from agent.destinations.base import SendResult
from agent.outbox.types import Batch


class HttpDestinationConfig(DestinationBase):
    """The keys of a ``[[destinations]]`` table with ``kind = "http"``."""

    kind: Literal["http"] = "http"
    url: HttpUrl
    token_file: Path | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=600)


class HttpDestination(PooledAdapter):
    """Posts frozen batches to a webhook.

    Args:
        name: the destination's name.
        url: where batches are posted.
        store_id: the store, sent in every body.
        token_file: a file holding the bearer token; None sends no Authorization.
        timeout_s: for connect, read and write each.
        transport: an httpx transport, for tests only.
    """

    kind = "http"

    def __init__(
        self,
        *,
        name: str,
        url: str,
        store_id: str,
        token_file: str | Path | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.url = str(url)
        self.store_id = store_id
        self.token_file = token_file
        self.timeout_s = timeout_s
        self._transport = transport
        self._token: str | None = None
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_config(cls, config: HttpDestinationConfig, *, store_id: str) -> HttpDestination:
        return cls(
            name=config.name,
            url=str(config.url),
            store_id=store_id,
            token_file=config.token_file,
            timeout_s=config.timeout_s,
        )

    async def start(self) -> None:
        """Read the token and open the connection pool."""
        if self.token_file is not None:
            self._token = read_secret(self.token_file, "token_file")
        self._open_pool()

    async def send(self, batch: Batch) -> SendResult:
        """Post one batch; see the module docstring for what each answer means."""
        if self._client is None:
            await self.start()
        assert self._client is not None
        headers = {"Idempotency-Key": batch.batch_id}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        what = f"POST {self.url}"
        response = await send_request(
            self._client, "POST", self.url, what=what, headers=headers, content=self.body(batch)
        )
        raise_for_status(response, what=what)
        return SendResult(rejected=_rejected(json_or_empty(response), set(batch.ids)))

    def body(self, batch: Batch) -> bytes:
        """The canonical JSON body of ``batch``: the same bytes on every resend.

        A batch from the outbox carries each envelope as canonical JSON
        (``Batch.encoded``, UTF-8), which is spliced in as is: decoding and encoding
        again would cost a third of the agent's work per record and yield the
        very same bytes. A batch built in memory is encoded whole.
        """
        if not batch.encoded:
            return dumps({"store_id": self.store_id, "batch_id": batch.batch_id, "records": batch.records})
        return b"".join(
            (
                b'{"batch_id":', encode_json_str(batch.batch_id).encode("utf-8"),
                b',"records":[', b",".join(batch.encoded),
                b'],"store_id":', encode_json_str(self.store_id).encode("utf-8"), b"}",
            )
        )  # fmt: skip


def _rejected(answer: Any, batch_ids: set[str]) -> dict[str, str]:
    """The ids the receiver refused, from ``{"rejected": [{"id", "error"}]}``.

    Entries naming an id that is not in the batch are ignored: a receiver
    cannot refuse what it was not sent.
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("rejected"), list):
        return {}
    refused: dict[str, str] = {}
    for entry in answer["rejected"]:
        if isinstance(entry, dict) and entry.get("id") in batch_ids:
            refused[str(entry["id"])] = str(entry.get("error") or "rejected by the receiver")[:1024]
    return refused
