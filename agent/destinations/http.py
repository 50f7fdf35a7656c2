"""Destination kind ``http``: the generic webhook, exactly contract §3.

``POST {url}`` with ``{"store_id", "batch_id", "records": [envelope, ...]}``,
``Idempotency-Key: {batch_id}``, and ``Authorization: Bearer <token>`` when
``token_file`` is set. The body is canonical JSON (sorted keys), so a resend of
the frozen batch is byte-identical and a receiver may compare bodies.

- 2xx: delivered, except the ids in an optional ``{"rejected": [{"id", "error"}]}``.
- connection errors, timeouts, 408, 425, 429, 5xx: ``RetryableError`` (with
  ``Retry-After``); the loop sends the same batch again.
- 401, 403, 404, 407: ``RetryableError`` with a hint: the agent's setup (token,
  URL, proxy) is wrong, not a record (``agent.destinations._httpcommon``).
- any other 4xx: ``PermanentError`` with the status and the first KiB of the
  answer; the loop splits the batch to find the refused record(s).
"""

from __future__ import annotations

from json.encoder import encode_basestring as encode_json_str
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import HttpUrl

from agent.configbase import read_secret
from agent.destinations._httpcommon import HeaderAuth, HttpAdapter, HttpKeys, dumps, json_or_empty
from agent.destinations.base import SendResult
from agent.outbox.types import Batch


class HttpDestinationConfig(HttpKeys):
    """The keys of a ``[[destinations]]`` table with ``kind = "http"``."""

    kind: Literal["http"] = "http"
    url: HttpUrl
    token_file: Path | None = None


class HttpDestination(HttpAdapter[HttpDestinationConfig]):
    """Posts frozen batches to a webhook, ``store_id`` in every body (``config``, ``transport``: see the base)."""

    kind = "http"
    receiver = "the receiver"

    def __init__(
        self, config: HttpDestinationConfig, *, store_id: str, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(config, transport=transport)
        self.url = str(config.url)
        self.store_id = store_id

    def auth(self) -> httpx.Auth | None:
        """``Authorization: Bearer`` with the token of ``token_file``, when set."""
        if self.config.token_file is None:
            return None
        return HeaderAuth.bearer(read_secret(self.config.token_file, "token_file"))

    async def send(self, batch: Batch) -> SendResult:
        """Post one batch; see the module docstring for what each answer means."""
        response = await self.post(self.url, self.body(batch), headers={"Idempotency-Key": batch.batch_id})
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
