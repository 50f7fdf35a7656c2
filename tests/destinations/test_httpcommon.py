"""What an HTTP answer means, decided once for the http, hogia and sharespine adapters."""

from __future__ import annotations

import httpx
import pytest

from agent.destinations._httpcommon import raise_for_status
from agent.destinations.base import PermanentError, RetryableError


def answer(status: int, body: str = "", **headers: str) -> httpx.Response:
    return httpx.Response(status, text=body, headers=headers, request=httpx.Request("POST", "http://127.0.0.1:9/x"))


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "Hogia refused our credentials; check the token in the config"),
        (403, "Hogia refused our credentials; check the token in the config"),
        (404, "check the URL in the config"),
        (407, "check the proxy in the config"),
    ],
)
def test_an_answer_about_our_config_is_retried_with_a_hint_never_refused(status: int, hint: str) -> None:
    """A wrong token, path or proxy must not turn the backlog into dead letters, even a single record."""
    with pytest.raises(RetryableError) as caught:
        raise_for_status(answer(status, "no"), what="POST /x", receiver="Hogia")
    assert hint in str(caught.value)
    assert caught.value.status == status


@pytest.mark.parametrize("status", [400, 409, 410, 413, 422])
def test_any_other_4xx_refuses_with_status_and_body(status: int) -> None:
    with pytest.raises(PermanentError) as caught:
        raise_for_status(answer(status, "x" * 2000), what="POST /x", receiver="Hogia")
    assert (caught.value.status, len(caught.value.body)) == (status, 1024)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 599])
def test_later_answers_are_retried_with_their_retry_after(status: int) -> None:
    with pytest.raises(RetryableError) as caught:
        raise_for_status(answer(status, **{"Retry-After": "7"}), what="POST /x", receiver="Hogia")
    assert (caught.value.status, caught.value.retry_after_s) == (status, 7)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_passes(status: int) -> None:
    raise_for_status(answer(status), what="POST /x", receiver="Hogia")


def test_a_redirect_is_a_setup_problem_retried_not_followed() -> None:
    with pytest.raises(RetryableError, match="unexpected HTTP 302"):
        raise_for_status(answer(302, location="http://elsewhere/"), what="POST /x", receiver="Hogia")


async def test_every_adapter_shares_one_tls_context_that_still_verifies() -> None:
    """The CA bundle is loaded once per start, not once per destination, and sharing it weakens nothing."""
    import ssl

    from agent.destinations._httpcommon import tls_context
    from agent.destinations.http import HttpDestination, HttpDestinationConfig

    adapters = [
        HttpDestination(HttpDestinationConfig(name=f"d{n}", url=f"https://127.0.0.1:9/{n}"), store_id="s")
        for n in range(3)
    ]
    for dest in adapters:
        await dest.start()
    try:
        pools = [dest._client._transport._pool for dest in adapters]  # type: ignore[union-attr]
        assert all(pool._ssl_context is tls_context() for pool in pools)
        assert tls_context().verify_mode == ssl.CERT_REQUIRED and tls_context().check_hostname
    finally:
        for dest in adapters:
            await dest.close()
