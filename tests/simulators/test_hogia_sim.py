"""The simulated Hogia API checks orders to the öre and names what is wrong."""

from __future__ import annotations

import base64
import copy

from agent.simulators import hogia

ORDER = {
    "externalId": "0193-a",
    "orderNumber": "kassa-1-1",
    "orderType": "sale",
    "orderDate": "2026-11-26T14:59:01+01:00",
    "storeId": "store-001",
    "tillId": "kassa-1",
    "receiptNumber": 1,
    "currency": "SEK",
    "rows": [
        {
            "articleNumber": "MILK",
            "description": "Mjölk",
            "quantity": "2.000",
            "unitPrice": "15.90",
            "discount": "0.00",
            "vatRate": 12,
            "amount": "31.80",
            "vatAmount": "3.41",
        },
        {
            "articleNumber": "rabatt",
            "description": "Rabatt",
            "quantity": "-1.000",
            "unitPrice": "1.80",
            "discount": "0.00",
            "vatRate": 12,
            "amount": "-1.80",
            "vatAmount": "-0.19",
        },
    ],
    "rounding": "0.00",
    "total": "30.00",
    "payments": [{"method": "cash", "amount": "30.00"}],
}


def broken(**changes) -> dict:
    order = copy.deepcopy(ORDER)
    for path, value in changes.items():
        target = order
        *parents, last = path.split("__")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return order


async def test_an_order_is_booked_once_and_a_changed_resend_conflicts(serve_sim):
    async with serve_sim(hogia.create_app()) as sim:
        created = await sim.http.post("/api/v1/orders", json=ORDER)
        again = await sim.http.post("/api/v1/orders", json=ORDER)
        changed = await sim.http.post("/api/v1/orders", json=broken(orderNumber="kassa-1-2"))
        ledger = await sim.ledger()
    assert (created.status_code, again.status_code, changed.status_code) == (201, 200, 409)
    assert again.json() == created.json() | {"duplicate": True}
    assert len(ledger["orders"]) == 1 and ledger["duplicates"] == 1


async def test_validation_names_the_field(serve_sim):
    cases = {
        "total": broken(total="30.01"),
        "rows[0].amount": broken(rows__0__amount="31.81"),
        "rows[1].vatAmount": broken(rows__1__vatAmount="-0.20"),
        "rows[0].vatRate": broken(rows__0__vatRate=7),
        "payments": broken(payments=[{"method": "cash", "amount": "29.00"}]),
        "orderType": broken(orderType="refund"),
        "rows[0].quantity": broken(rows__0__quantity=2),
    }
    async with serve_sim(hogia.create_app()) as sim:
        for field_name, order in cases.items():
            answer = await sim.http.post("/api/v1/orders", json=order)
            assert answer.status_code == 422, field_name
            assert answer.json()["details"][0]["field"] == field_name
        assert (await sim.ledger())["orders"] == []


async def test_oauth2_client_credentials_by_basic_or_form(serve_sim):
    app = hogia.create_app(auth="oauth2", client_id="c", client_secret="s")
    async with serve_sim(app) as sim:
        assert (await sim.http.post("/api/v1/orders", json=ORDER)).status_code == 401
        basic = base64.b64encode(b"c:s").decode()
        by_basic = await sim.http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
        )
        by_form = await sim.http.post(
            "/oauth/token", data={"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}
        )
        wrong = await sim.http.post(
            "/oauth/token", data={"grant_type": "client_credentials", "client_id": "c", "client_secret": "x"}
        )
        assert (by_basic.status_code, by_form.status_code, wrong.status_code) == (200, 200, 401)
        assert by_basic.json()["token_type"] == "Bearer" and by_basic.json()["expires_in"] == 3600
        token = by_form.json()["access_token"]
        booked = await sim.http.post("/api/v1/orders", json=ORDER, headers={"Authorization": f"Bearer {token}"})
        assert booked.status_code == 201


async def test_stock_adjustments_are_deduplicated_by_external_id(serve_sim):
    adjustment = {
        "externalId": "0193-b",
        "articleNumber": "MILK",
        "quantity": "24.000",
        "reason": "delivery",
        "date": "2026-11-26T14:59:01+01:00",
        "storeId": "store-001",
        "reference": "k",
        "note": None,
    }
    async with serve_sim(hogia.create_app(auth="api_key", api_key="k1")) as sim:
        headers = {"X-Api-Key": "k1"}
        first = await sim.http.post("/api/v1/stock-adjustments", json=adjustment, headers=headers)
        second = await sim.http.post("/api/v1/stock-adjustments", json=adjustment, headers=headers)
        zero = await sim.http.post(
            "/api/v1/stock-adjustments", json=adjustment | {"externalId": "c", "quantity": "0"}, headers=headers
        )
        ledger = await sim.ledger()
    assert (first.status_code, second.status_code, zero.status_code) == (201, 200, 422)
    assert zero.json()["details"][0]["field"] == "quantity"
    assert len(ledger["stock_adjustments"]) == 1
