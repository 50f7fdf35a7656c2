"""What ``kassabro sie show FILE`` prints: the vouchers, a balance verdict, a checksum verdict.

Meant for the shop and its accountant before an import: it decodes the CP437
file, lists each voucher account by account, and says plainly whether every
voucher balances and whether ``#KSUMMA`` matches. Exit status 0 only when the
file has no problem at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.sie.reader import SieDocument, read


@dataclass(frozen=True)
class ShowResult:
    text: str
    ok: bool

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def _money(value: object) -> str:
    return f"{value:>12,.2f}".replace(",", " ")


def render_document(doc: SieDocument, title: str) -> ShowResult:
    """The report for an already parsed file."""
    out = [title]
    program = " ".join(doc.program) or "?"
    generated = doc.generated.isoformat() if doc.generated else "?"
    out.append(f"  Company:  {doc.company_name or '?'} ({doc.orgnr or 'no #ORGNR'})")
    out.append(f"  Program:  {program}, generated {generated}")
    out.append(f"  Vouchers: {len(doc.vouchers)}")
    for index, voucher in enumerate(doc.vouchers, start=1):
        day = voucher.date.isoformat() if voucher.date else "?"
        series = f" series {voucher.series}" if voucher.series else ""
        out.append("")
        out.append(f"Voucher {index}{series}  {day}  {voucher.text}")
        for row in voucher.rows:
            name = doc.accounts.get(row.account, "")
            out.append(f"  {row.account:<6} {name[:38]:<38} {_money(row.amount)}  {row.text}")
        verdict = "balanced" if voucher.balance == 0 else "DOES NOT BALANCE"
        out.append(f"  {'':<6} {'sum':<38} {_money(voucher.balance)}  {verdict}")
    out.append("")
    unbalanced = doc.unbalanced
    if unbalanced:
        out.append(f"Balance:  NOT OK, {len(unbalanced)} of {len(doc.vouchers)} voucher(s) do not sum to 0.00")
    else:
        out.append(f"Balance:  OK, all {len(doc.vouchers)} voucher(s) sum to 0.00")
    if doc.checksum_ok is None:
        out.append("Checksum: none (the file has no #KSUMMA)")
    elif doc.checksum_ok:
        out.append(f"Checksum: OK (#KSUMMA {doc.checksum_declared})")
    else:
        out.append(f"Checksum: NOT OK (#KSUMMA {doc.checksum_declared}, content sums to {doc.checksum_computed})")
    if doc.errors:
        out.append(f"Problems: {len(doc.errors)}")
        out.extend(f"  {problem}" for problem in doc.errors)
    else:
        out.append("Problems: none")
    return ShowResult("\n".join(out) + "\n", not doc.errors and bool(doc.vouchers))


def show(path: Path | str) -> ShowResult:
    """Read ``path`` and describe it; an unreadable file is a failed result, not an exception."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ShowResult(f"{path}: cannot read: {exc.strerror or exc}\n", False)
    return render_document(read(data), str(path))
