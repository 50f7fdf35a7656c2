"""The one way into the outbox (``agent.ingest``): strict JSON, batch rules, contract §2 answers.

HTTP, the spool directory, MQTT and ``kassabro submit`` all end here, so these
tests pin what every door shares: which bodies are refused and how the refusal
names the field, which status each outcome gets, and that a sale's derived
stock movements are stored with it or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.ingest import BadInput, IngestAnswer, Ingestor, parse_json, validate_batch
from agent.outbox.service import Outbox
from agent.outbox.store import OutboxStore
from tests.helpers import STORE_ID
from tests.outbox.records import movement_json, raw_rows, sale_json


def locs(exc: pytest.ExceptionInfo[BadInput]) -> list[list[Any]]:
    return [d["loc"] for d in exc.value.details]


# ------------------------------------------------------------------ parse_json
def test_parse_json_reads_bytes_and_text() -> None:
    assert parse_json(b'{"a": [1, "2.50"]}') == {"a": [1, "2.50"]}
    assert parse_json('{"namn": "Mjölk"}') == {"namn": "Mjölk"}
    assert parse_json("\ufeff{}".encode()) == {}  # a BOM some Windows tills write


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (b'{"total": 10, "total": 99}', ["body", "total"], "more than once"),
        (b'{"lines": [{"sku": "a", "sku": "b"}]}', ["body", "sku"], "more than once"),
        (b'{"total": NaN}', ["body"], "NaN"),
        (b'{"total": Infinity}', ["body"], "Infinity"),
        (b'{"total": -Infinity}', ["body"], "Infinity"),
        (b"\xff\xfe{}", ["body"], "UTF-8"),
        (b'{"total": 10', ["body"], "malformed JSON"),
        (b"", ["body"], "malformed JSON"),
        (b"[" * 100_000, ["body"], ""),
    ],
)
def test_parse_json_refuses_what_parsers_disagree_on(body: bytes, loc: list[str], words: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_json(body)
    [detail] = caught.value.details
    assert detail["loc"] == loc
    assert words in detail["msg"]


def test_malformed_json_says_where() -> None:
    with pytest.raises(BadInput) as caught:
        parse_json(b'{\n  "a": 1,\n  "b": }')
    assert "line 3" in caught.value.details[0]["msg"]


# ------------------------------------------------------------------ validate_batch
def test_a_batch_gives_sales_first_then_movements_in_order() -> None:
    records = validate_batch(
        {"stock_movements": [movement_json("m2"), movement_json("m1")], "sales": [sale_json(2), sale_json(1)]}
    )
    assert [r.key for r in records] == [
        "sale:kassa-1:2",
        "sale:kassa-1:1",
        "stock_movement:kassa-1:m2",
        "stock_movement:kassa-1:m1",
    ]


def test_a_batch_may_hold_only_one_kind() -> None:
    assert len(validate_batch({"sales": [sale_json(1)]})) == 1
    assert len(validate_batch({"stock_movements": [movement_json("m1")]})) == 1


@pytest.mark.parametrize("body", [[], "sales", 7, None])
def test_a_batch_must_be_an_object(body: Any) -> None:
    with pytest.raises(BadInput) as caught:
        validate_batch(body)
    assert locs(caught) == [["body"]]


def test_every_bad_record_in_a_batch_is_reported_with_its_place() -> None:
    bad_sale = sale_json(2)
    bad_sale["total"] = "99.99"
    bad_movement = movement_json("m1")
    del bad_movement["sku"]
    with pytest.raises(BadInput) as caught:
        validate_batch({"sales": [sale_json(1), bad_sale], "stock_movements": [bad_movement], "refunds": []})

    found = locs(caught)
    assert ["sales", 1, "total"] in found
    assert ["stock_movements", 0, "sku"] in found
    assert ["refunds"] in found
    assert not any(loc[:2] == ["sales", 0] for loc in found)


def test_a_batch_list_that_is_not_a_list_is_named() -> None:
    with pytest.raises(BadInput) as caught:
        validate_batch({"sales": {"receipt_no": 1}})
    assert locs(caught) == [["sales"]]


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(BadInput) as caught:
        validate_batch({"sales": [], "stock_movements": []})
    assert "no records" in caught.value.details[0]["msg"]


def test_one_key_twice_in_a_batch_is_refused() -> None:
    with pytest.raises(BadInput) as caught:
        validate_batch({"sales": [sale_json(1), sale_json(1, price="5.00")]})
    assert "sale:kassa-1:1" in caught.value.details[0]["msg"]


def test_a_non_object_record_in_a_batch_is_named() -> None:
    with pytest.raises(BadInput) as caught:
        validate_batch({"sales": [sale_json(1), 42]})
    assert locs(caught)[0][:2] == ["sales", 1]


# ------------------------------------------------------------------ the Ingestor on a real outbox
def keys_on_disk(outbox: Outbox) -> list[str]:
    return [r[0] for r in raw_rows(outbox.path, "SELECT key FROM records ORDER BY seq")]


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


async def test_one_sale_is_stored_with_its_derived_movements_in_seq_order(outbox: Outbox) -> None:
    answer = await Ingestor(outbox).one("sale", body(sale_json(7, lines=3)))

    assert answer.status == 201
    assert answer.body == {"id": answer.body["id"], "key": "sale:kassa-1:7", "seq": 1, "duplicate": False}
    assert keys_on_disk(outbox) == [
        "sale:kassa-1:7",
        "stock_movement:kassa-1:r7.0",
        "stock_movement:kassa-1:r7.1",
        "stock_movement:kassa-1:r7.2",
    ]
    [(data,)] = raw_rows(outbox.path, "SELECT data FROM records WHERE key = 'stock_movement:kassa-1:r7.1'")
    movement = json.loads(data)
    assert (movement["sku"], movement["delta"], movement["reason"]) == ("SKU-1", "-1.000", "sale")


async def test_derivation_can_be_switched_off(outbox: Outbox) -> None:
    answer = await Ingestor(outbox, derive_stock_from_sales=False).one("sale", body(sale_json(7, lines=3)))
    assert answer.status == 201
    assert keys_on_disk(outbox) == ["sale:kassa-1:7"]


async def test_a_duplicate_answers_200_with_the_stored_id(outbox: Outbox) -> None:
    ingestor = Ingestor(outbox)
    first = await ingestor.one("sale", body(sale_json(1)))
    again = await ingestor.one("sale", body(sale_json(1)))

    assert (first.status, again.status) == (201, 200)
    assert again.body == {**first.body, "duplicate": True}
    assert len(keys_on_disk(outbox)) == 2  # the sale and its one movement, once


async def test_a_conflict_answers_409_and_keeps_the_original(outbox: Outbox) -> None:
    ingestor = Ingestor(outbox)
    first = await ingestor.one("sale", body(sale_json(1, price="10.00")))
    clash = await ingestor.one("sale", body(sale_json(1, price="12.00")))

    assert clash.status == 409
    assert clash.body == {"error": "conflict", "key": "sale:kassa-1:1", "id": first.body["id"]}
    [(data,)] = raw_rows(outbox.path, "SELECT data FROM records WHERE key = 'sale:kassa-1:1'")
    assert json.loads(data)["total"] == "10.00"


async def test_a_sale_whose_derived_movement_conflicts_is_not_stored_either(outbox: Outbox) -> None:
    """The derived movements are in the sale's transaction: all or nothing."""
    ingestor = Ingestor(outbox)
    taken = await ingestor.one("stock_movement", body(movement_json("r5.0", delta="3")))
    assert taken.status == 201

    answer = await ingestor.one("sale", body(sale_json(5)))

    assert answer.status == 409
    assert answer.body["key"] == "stock_movement:kassa-1:r5.0"
    assert keys_on_disk(outbox) == ["stock_movement:kassa-1:r5.0"]


async def test_an_invalid_record_answers_422_naming_the_field_and_stores_nothing(outbox: Outbox) -> None:
    bad = sale_json(1)
    bad["lines"][0]["vat_rate"] = 24
    answer = await Ingestor(outbox).one("sale", body(bad))

    assert answer.status == 422
    assert answer.body["error"] == "validation"
    assert ["lines", 0, "vat_rate"] in [d["loc"] for d in answer.body["details"]]
    assert keys_on_disk(outbox) == []


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"till_id": "k", "till_id": "k"}', ["body", "till_id"]),
        (b'{"total": NaN}', ["body"]),
        (b"not json", ["body"]),
    ],
)
async def test_bad_json_answers_422(outbox: Outbox, raw: bytes, loc: list[str]) -> None:
    answer = await Ingestor(outbox).one("sale", raw)
    assert answer.status == 422
    assert answer.body["details"][0]["loc"] == loc


async def test_a_huge_exponent_is_refused_by_its_field(outbox: Outbox) -> None:
    raw = json.dumps(sale_json(1)).replace('"total": "31.80"', '"total": 1e999').encode()
    answer = await Ingestor(outbox).one("sale", raw)
    assert answer.status == 422
    assert ["total"] in [d["loc"] for d in answer.body["details"]]


async def test_an_unknown_record_type_is_refused(outbox: Outbox) -> None:
    answer = await Ingestor(outbox).one("refund", b"{}")
    assert answer.status == 422
    assert answer.body["details"][0]["loc"] == ["type"]


async def test_a_batch_is_stored_all_or_nothing(outbox: Outbox) -> None:
    ingestor = Ingestor(outbox)
    await ingestor.one("sale", body(sale_json(1, price="10.00")))

    answer = await ingestor.batch(
        body({"sales": [sale_json(2), sale_json(1, price="11.00")], "stock_movements": [movement_json("m1")]})
    )

    assert answer.status == 409
    assert keys_on_disk(outbox) == ["sale:kassa-1:1", "stock_movement:kassa-1:r1.0"]


async def test_a_batch_answers_each_primary_record(outbox: Outbox) -> None:
    ingestor = Ingestor(outbox)
    first = await ingestor.batch(body({"sales": [sale_json(1, lines=2)], "stock_movements": [movement_json("m1")]}))
    assert first.status == 201
    assert [r["key"] for r in first.body["records"]] == ["sale:kassa-1:1", "stock_movement:kassa-1:m1"]
    assert [r["duplicate"] for r in first.body["records"]] == [False, False]
    assert len(keys_on_disk(outbox)) == 4  # the sale, its two lines' movements, and m1

    again = await ingestor.batch(body({"sales": [sale_json(1, lines=2)], "stock_movements": [movement_json("m1")]}))
    assert again.status == 200
    assert [r["duplicate"] for r in again.body["records"]] == [True, True]

    mixed = await ingestor.batch(body({"sales": [sale_json(1, lines=2), sale_json(2)]}))
    assert mixed.status == 201
    assert [r["duplicate"] for r in mixed.body["records"]] == [True, False]


async def test_a_bad_batch_answers_422_with_every_place(outbox: Outbox) -> None:
    bad = sale_json(2)
    bad["payments"] = []
    answer = await Ingestor(outbox).batch(body({"sales": [sale_json(1), bad]}))
    assert answer.status == 422
    assert [d["loc"] for d in answer.body["details"]] == [["sales", 1, "payments"]]
    assert keys_on_disk(outbox) == []


async def test_a_full_outbox_answers_507_and_still_answers_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    store = OutboxStore.open(path, store_id=STORE_ID)
    store.close()
    box = Outbox(path, store_id=STORE_ID)
    await box.start()
    await Ingestor(box).one("sale", body(sale_json(1)))
    await box.close()
    limit = OutboxStore.open(path, store_id=STORE_ID)
    used = limit.used_bytes()
    limit.close()

    full = Outbox(path, store_id=STORE_ID, max_bytes=used)
    await full.start()
    try:
        ingestor = Ingestor(full)
        refused = await ingestor.one("sale", body(sale_json(2)))
        duplicate = await ingestor.one("sale", body(sale_json(1)))
    finally:
        await full.close()

    assert refused.status == 507
    assert refused.body["error"] == "storage_full"
    assert duplicate.status == 200
    assert raw_rows(path, "SELECT COUNT(*) FROM records WHERE key LIKE 'sale:%'") == [(1,)]


async def test_a_closing_ingestor_answers_503_and_stores_nothing(outbox: Outbox) -> None:
    ingestor = Ingestor(outbox)
    ingestor.closing = True
    answer = await ingestor.one("sale", body(sale_json(1)))
    assert answer.status == 503
    assert keys_on_disk(outbox) == []


async def test_a_closed_outbox_answers_503(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", store_id=STORE_ID)
    await box.start()
    await box.close()
    answer = await Ingestor(box).one("sale", body(sale_json(1)))
    assert answer.status == 503


async def test_every_answer_is_reported_to_on_answer(outbox: Outbox) -> None:
    seen: list[tuple[str, int]] = []

    def note(record_type: str, answer: IngestAnswer) -> None:
        seen.append((record_type, answer.status))

    ingestor = Ingestor(outbox, on_answer=note)
    await ingestor.one("sale", body(sale_json(1)))
    await ingestor.one("sale", body(sale_json(1)))
    await ingestor.one("stock_movement", b"{}")
    await ingestor.batch(body({"stock_movements": [movement_json("m9")]}))

    assert seen == [("sale", 201), ("sale", 200), ("stock_movement", 422), ("batch", 201)]


async def test_parsed_json_is_accepted_as_well_as_bytes(outbox: Outbox) -> None:
    ingestor = Ingestor(outbox)
    assert (await ingestor.one("stock_movement", movement_json("m1"))).status == 201
    assert (await ingestor.batch({"stock_movements": [movement_json("m2")]})).status == 201
