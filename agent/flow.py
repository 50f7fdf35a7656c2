"""``[flow]``: which system carries the till's records to Hogia Smart and to the webshop.

In the seed's omnichannel setup (docs/setups.md) the till reports every sale to
Hogia Smart itself, and Sharespine reads stock levels from the Hogia API. A
``hogia`` destination that books the same sales, or a ``sharespine``
destination that sends the same stock changes, counts them twice (contract §3).
The config therefore states the path, and ``check-config`` and start-up refuse
a destination that contradicts it; the message names the flow and the page
that explains the two setups, so the technician decides once, on paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

SETUPS_DOC = "docs/setups.md"


class FlowConfig(BaseModel):
    """``[flow]``; the defaults are the seed's flow (setup a).

    ``sales_to_hogia``: ``"till"`` when the till reports its sales (and its stock
    changes) to Hogia Smart itself; ``"kassabro"`` when the till hands its records
    to Kassabro only and Kassabro books them in Hogia (setup b).

    ``webshop_stock``: ``"hogia"`` when Sharespine reads stock levels from the
    Hogia API; ``"kassabro"`` when Sharespine's stock for this shop comes from
    Kassabro's changes (Sharespine's reading of stock from Hogia switched off).
    """

    model_config = ConfigDict(extra="forbid")

    sales_to_hogia: Literal["till", "kassabro"] = "till"
    webshop_stock: Literal["hogia", "kassabro"] = "hogia"


class _Destination(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def types(self) -> Sequence[str]: ...


def flow_problems(flow: FlowConfig, destinations: Sequence[tuple[str, _Destination]]) -> list[tuple[str, str]]:
    """``(key, message)`` for every destination that would send what the flow already carries.

    Args:
        flow: ``[flow]``.
        destinations: ``(where, validated destination)``, where is its key (``destinations[2]``).
    """
    problems: list[tuple[str, str]] = []
    for where, dest in destinations:
        if dest.kind == "hogia" and flow.sales_to_hogia == "till" and getattr(dest, "send_records", True):
            sent = [t for t in ("sale", "stock_movement") if t in dest.types]
            if sent:
                problems.append(
                    (
                        f"{where}.types",
                        f"hogia destination {dest.name!r} would book {' and '.join(sent)} records in Hogia Smart, "
                        'but [flow] sales_to_hogia = "till": the till already reports them '
                        "(till -> Hogia Smart), so every sale would count twice. "
                        "Set send_records = false to only read the article register, or, when the till's own "
                        'sync to Hogia Smart is switched off, [flow] sales_to_hogia = "kassabro" '
                        f"(see {SETUPS_DOC})",
                    )
                )
        if dest.kind == "sharespine" and flow.webshop_stock == "hogia" and "stock_movement" in dest.types:
            problems.append(
                (
                    f"{where}.types",
                    f"sharespine destination {dest.name!r} would send stock changes, "
                    'but [flow] webshop_stock = "hogia": Sharespine already reads stock from the Hogia API '
                    "(Hogia Smart -> Hogia API -> Sharespine -> webshop), so webshop stock would drop twice. "
                    'Remove "stock_movement" from types, or, when Sharespine no longer reads stock from Hogia, '
                    f'[flow] webshop_stock = "kassabro" (see {SETUPS_DOC})',
                )
            )
        if dest.kind == "sharespine" and flow.webshop_stock == "hogia" and getattr(dest, "sales_as_orders", False):
            problems.append(
                (
                    f"{where}.sales_as_orders",
                    f"sharespine destination {dest.name!r} would send every sale as an order, "
                    'but [flow] webshop_stock = "hogia": Sharespine already takes this shop\'s orders from the '
                    "Hogia API (Hogia Butikkassa -> Hogia Smart -> Hogia API -> Sharespine), so every sale would "
                    "show twice in Sharespine. Set sales_as_orders = false, or, when Sharespine no longer reads "
                    f'this shop from Hogia, [flow] webshop_stock = "kassabro" (see {SETUPS_DOC})',
                )
            )
    return problems
