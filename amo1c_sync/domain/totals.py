"""Payments (F3), the pure part: what a lead's total is, how amoCRM is told, and which leads changed.

No I/O and no clock here. Money is ``Decimal`` end to end; a float anywhere is a TypeError.

* A document *counts* when it is posted, not marked for deletion and belongs to a lead.
* A lead's total is the exact sum of its counting documents' amounts.
* «Сумма1С» gets the exact total as a plain decimal string ("250.5", "150", never "1.5E+2");
  the budget (``price``, an integer in amoCRM) gets it rounded half up to whole roubles.
* A total equal to the last one pushed is not pushed again; a lead never pushed counts as 0, so
  an unposted document does not clear a budget someone typed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Collection, Iterable, Mapping, Protocol

ZERO = Decimal("0")
_ROUBLE = Decimal("1")


class Countable(Protocol):
    """What a document needs to say to be counted (store rows and gateway objects both fit)."""

    @property
    def amount(self) -> Decimal | None: ...

    @property
    def posted(self) -> bool: ...

    @property
    def deletion_mark(self) -> bool: ...


@dataclass(frozen=True)
class DocState:
    """A document as the totals see it."""

    ref: str
    lead_id: int | None
    amount: Decimal
    posted: bool
    deletion_mark: bool

    def __post_init__(self) -> None:
        _require_decimal(self.amount, f"amount of {self.ref}")

    @property
    def counts(self) -> bool:
        return counts(self)


def _require_decimal(value: object, what: str) -> None:
    if not isinstance(value, Decimal):
        raise TypeError(f"{what} must be Decimal, got {type(value).__name__}")


def counts(doc: Countable) -> bool:
    """Posted and not marked for deletion."""
    return bool(doc.posted) and not bool(doc.deletion_mark)


def total(docs: Iterable[Countable]) -> Decimal:
    """The exact sum of the counting documents' amounts (``Decimal('0')`` when none count)."""
    out = ZERO
    for d in docs:
        if not counts(d):
            continue
        amount = d.amount if d.amount is not None else ZERO
        _require_decimal(amount, "amount")
        out += amount
    return out


def budget(value: Decimal) -> int:
    """The lead's price: whole roubles, rounded half up (250.50 -> 251, 0.49 -> 0). amoCRM takes no
    negative price, so a negative total (refunds beyond payments) gives 0."""
    _require_decimal(value, "total")
    rounded = int(value.quantize(_ROUBLE, rounding=ROUND_HALF_UP))
    return max(rounded, 0)


def sum_field_value(value: Decimal) -> str:
    """The exact total as a string amoCRM accepts for a numeric field: plain notation, a point as
    the separator, no trailing fractional zeros ("150", "250.5", "0.01"), no "-0"."""
    _require_decimal(value, "total")
    if not value.is_finite():
        raise ValueError(f"total {value} is not a finite number")
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def same_total(pushed: Decimal | None, new: Decimal) -> bool:
    """True when ``new`` need not be pushed. A lead never pushed (``None``) counts as 0."""
    return (pushed if pushed is not None else ZERO) == new


def lead_totals(docs: Iterable[DocState], leads: Iterable[int]) -> dict[int, Decimal]:
    """The total of each lead in ``leads`` from the documents given (documents of other leads are
    ignored; a lead without documents totals 0)."""
    wanted = set(leads)
    out = {lead: ZERO for lead in wanted}
    for d in docs:
        if d.lead_id in wanted and d.counts:
            out[d.lead_id] += d.amount
    return out


def merge(stored: Mapping[str, DocState], changed: Mapping[str, DocState]) -> dict[str, DocState]:
    """The documents as 1C holds them now: the stored states overlaid by the freshly read ones."""
    out = dict(stored)
    out.update(changed)
    return out


def affected_leads(stored: Mapping[str, DocState], changed: Iterable[DocState]) -> set[int]:
    """Leads whose total may differ after ``changed``: each changed document's lead now and the
    lead it belonged to before (a document moved to another «Заявка», or lost its base)."""
    out: set[int] = set()
    for d in changed:
        if d.lead_id is not None:
            out.add(d.lead_id)
        before = stored.get(d.ref)
        if before is not None and before.lead_id is not None:
            out.add(before.lead_id)
    return out


def leads_to_push(totals: Mapping[int, Decimal], pushed: Mapping[int, Decimal | None], *,
                  in_flight: Collection[int] = ()) -> dict[int, Decimal]:
    """The totals that differ from the last ones pushed, in lead order, and those of the leads
    with a push in flight (amoCRM may hold the unconfirmed value, whatever was last confirmed)."""
    return {lead: t for lead, t in sorted(totals.items())
            if lead in in_flight or not same_total(pushed.get(lead), t)}


def parse_lead_id(text: str | None) -> int | None:
    """«Номер AmoCRM» -> a lead id, or None when it is empty or not a positive whole number."""
    if text is None:
        return None
    s = str(text).strip()
    if not s.isdigit() or not s.isascii():
        return None
    n = int(s)
    return n if n > 0 else None


def money_text(value: Decimal | None) -> str | None:
    """Money for people and the journal: at least two decimals ("150.00", "0.00", "1.005")."""
    if value is None:
        return None
    if value.as_tuple().exponent > -2:  # type: ignore[operator]
        value = value.quantize(Decimal("0.01"))
    return format(value, "f")
