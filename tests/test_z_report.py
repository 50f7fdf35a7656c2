"""The z_report record (contract §1), a sale's printed VAT, and the gift-card rule at ingest."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from agent.ingest import BadInput, validate_batch, validate_one
from agent.records import RecordValidationError, Sale, ZReport, digest, normalize, parse_record
from tests.helpers import make_sale, make_z_report


def refusal(record_type: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(RecordValidationError) as caught:
        parse_record(record_type, data)
    return caught.value.details


def test_a_z_report_is_stored_with_fixed_scales_and_its_key() -> None:
    z = parse_record("z_report", make_z_report(245, 1001, 1012, rounding=0.2, grand_total=10))
    assert isinstance(z, ZReport)
    assert z.key == "z_report:kassa-1:245"
    data = normalize(z)
    assert data["rounding"] == "0.20" and data["grand_total"] == "10.00" and data["returns_total"] == "0.00"
    assert (data["first_receipt_no"], data["last_receipt_no"], data["receipt_count"]) == (1001, 1012, 12)
    assert normalize(parse_record("z_report", data)) == data  # the stored form reads back as itself


def test_a_z_report_without_sales_names_no_receipts() -> None:
    z = parse_record("z_report", make_z_report(246, None, None))
    assert isinstance(z, ZReport) and z.first_receipt_no is None and z.receipt_count == 0


@pytest.mark.parametrize(
    ("change", "loc", "words"),
    [
        ({"closed_at": "2026-11-26T07:00:00+01:00"}, ["closed_at"], "before opened_at"),
        ({"last_receipt_no": None}, ["last_receipt_no"], "come together"),
        ({"last_receipt_no": 1000}, ["last_receipt_no"], "below first_receipt_no"),
        ({"receipt_count": 13}, ["receipt_count"], "more than the 12 numbers"),
        ({"receipt_count": -1}, ["receipt_count"], "at least 0"),
        ({"z_no": 0}, ["z_no"], "at least 1"),
        ({"z_no": "245"}, ["z_no"], "must be an integer"),
        ({"gross": [{"rate": 12, "amount": "1.00"}, {"rate": 12, "amount": "2.00"}]}, ["gross"], "twice"),
        ({"vat": [{"rate": 0, "amount": "1.00"}]}, ["vat"], "rate 0 must be 0.00"),
        ({"vat": [{"rate": 13, "amount": "1.00"}]}, ["vat", 0, "rate"], "25, 12, 6 or 0"),
        ({"payments": [{"method": "card", "amount": 1}, {"method": "card", "amount": 2}]}, ["payments"], "twice"),
        ({"payments": [{"method": "cheque", "amount": 1}]}, ["payments", 0, "method"], "must be"),
        ({"returns_total": "5.00"}, ["returns_total"], "must not be positive"),
        ({"grand_total": "1.005"}, ["grand_total"], "more than 2 decimals"),
        ({"opened_at": "2026-11-26T08:00:00"}, ["opened_at"], "UTC offset"),
        ({"z_number": 3}, ["z_number"], "unknown field"),
    ],
)
def test_each_z_report_rule_is_refused_naming_the_field(change: dict[str, Any], loc: list[Any], words: str) -> None:
    details = refusal("z_report", make_z_report(245, 1001, 1012) | change)
    assert [d["loc"] for d in details] == [loc], details
    assert words in details[0]["msg"]


def test_a_z_report_may_not_name_receipts_it_does_not_count() -> None:
    details = refusal("z_report", make_z_report(1, None, None, receipt_count=4))
    assert details[0]["loc"] == ["receipt_count"] and "names no receipts" in details[0]["msg"]


def test_a_sale_may_carry_the_vat_its_till_printed() -> None:
    sale = parse_record("sale", make_sale(1, vat=[{"rate": 12, "amount": "3.41"}]))
    assert isinstance(sale, Sale) and sale.vat is not None
    assert normalize(sale)["vat"] == [{"rate": 12, "amount": "3.41"}]
    details = refusal("sale", make_sale(1, vat=[{"rate": 12, "amount": 1}, {"rate": 12, "amount": 2}]))
    assert details[0]["loc"] == ["vat"]


def test_a_sale_without_printed_vat_keeps_the_stored_form_it_always_had() -> None:
    """Sales stored before ``vat`` existed keep their digest: a resend is a duplicate, not a conflict."""
    data = normalize(parse_record("sale", make_sale(7)))
    assert "vat" not in data
    before = {  # the stored form of this sale as the release before this one wrote it
        "till_id": "kassa-1",
        "receipt_no": 7,
        "occurred_at": "2026-11-26T14:59:01+01:00",
        "kind": "sale",
        "currency": "SEK",
        "lines": [
            {
                "sku": "7310865004703",
                "name": "Mjölk 1,5%",
                "quantity": "2.000",
                "unit_price": "15.90",
                "vat_rate": 12,
                "discount": "0.00",
            }
        ],
        "fees": [],
        "discount": "0.00",
        "rounding": "0.00",
        "total": "31.80",
        "payments": [{"method": "card", "amount": "31.80"}],
    }
    assert digest(data) == digest(before)


def gift_card_sale(n: int, vat_rate: int, sku: str = "presentkort") -> dict[str, Any]:
    return make_sale(
        n,
        lines=[{"sku": sku, "name": "Presentkort", "quantity": 1, "unit_price": "500.00", "vat_rate": vat_rate}],
        total="500.00",
        payments=[{"method": "card", "amount": "500.00"}],
    )


def test_a_gift_card_line_must_be_at_vat_rate_zero() -> None:
    assert isinstance(validate_one("sale", gift_card_sale(1, 0)), Sale)
    with pytest.raises(BadInput) as caught:
        validate_one("sale", gift_card_sale(2, 25))
    assert caught.value.details == [
        {
            "loc": ["lines", 0, "vat_rate"],
            "msg": "the line sells a gift card (sku 'presentkort'): its vat_rate must be 0, got 25",
        }
    ]
    # another SKU is an ordinary line at 25 %; with it configured as a gift card it is not
    assert isinstance(validate_one("sale", gift_card_sale(3, 25, sku="gc-500")), Sale)
    with pytest.raises(BadInput):
        validate_one("sale", gift_card_sale(3, 25, sku="gc-500"), gift_card_skus={"gc-500"})


def test_a_batch_takes_z_reports_and_reports_refusals_with_their_place() -> None:
    heard: list[tuple[str, Any, list[dict[str, Any]]]] = []
    records = validate_batch({"sales": [make_sale(1)], "z_reports": [make_z_report(1, 1, 1)]})
    assert [r.key for r in records] == ["sale:kassa-1:1", "z_report:kassa-1:1"]
    with pytest.raises(BadInput) as caught:
        validate_batch(
            {"sales": [make_sale(2), gift_card_sale(3, 12)], "z_reports": [make_z_report(2, 2, 3)]},
            on_refused=lambda *args: heard.append(args),
        )
    assert caught.value.details[0]["loc"] == ["sales", 1, "lines", 0, "vat_rate"]
    # the refused sale with its own reason, then the valid ones the batch took down with it
    assert [(t, d["receipt_no"] if t == "sale" else d["z_no"]) for t, d, _ in heard] == [
        ("sale", 3),
        ("sale", 2),
        ("z_report", 2),
    ]
    assert "refused with its batch (sales.1.lines.0.vat_rate" in heard[1][2][0]["msg"]
    assert Decimal(normalize(records[1])["grand_total"]) == Decimal("1234567.00")
