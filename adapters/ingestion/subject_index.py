"""Where a payment or withdrawal is found from what a provider calls it: claims taken when it was
recorded (order or request id) and when the provider took it (its reference). Payment and
withdrawal creation take these claims; deliveries and their matching read them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ledger.commands import PaymentReference, PaymentUpdate, WithdrawalReference, WithdrawalUpdate
from ledger.payment import Payment, Submission
from ledger.ports import EventStore
from ledger.recording import ProviderRecordedAggregate
from ledger.withdrawal import Withdrawal

PAYMENT_ORDER = "payment_order"
PAYMENT_REF = "payment_ref"
WITHDRAWAL_REQUEST = "withdrawal_request"
WITHDRAWAL_REF = "withdrawal_ref"

SubjectT = TypeVar("SubjectT", bound=ProviderRecordedAggregate)
Loader = Callable[[type[SubjectT], str], "object"]


def subject_keys(
    fact: PaymentUpdate | WithdrawalUpdate,
) -> tuple[type[ProviderRecordedAggregate], list[tuple[str, str]]]:
    """The subject's type and the claims (namespace, key) that may name it, surest first."""
    reference = fact.reference
    if isinstance(reference, PaymentReference):
        names = [(PAYMENT_REF, reference.provider_ref), (PAYMENT_ORDER, reference.order_id)]
        subject_type: type[ProviderRecordedAggregate] = Payment
    else:
        assert isinstance(reference, WithdrawalReference)
        names = [
            (WITHDRAWAL_REF, reference.provider_ref),
            (WITHDRAWAL_REQUEST, reference.request_id),
        ]
        subject_type = Withdrawal
    keys = [(namespace, f"{reference.provider}:{name}") for namespace, name in names if name]
    return subject_type, keys


async def find_subject_stream(
    store: EventStore, fact: PaymentUpdate | WithdrawalUpdate
) -> tuple[type[ProviderRecordedAggregate], str] | None:
    """The type and stream of the subject `fact` names, or None when no claim names one."""
    subject_type, keys = subject_keys(fact)
    for namespace, key in keys:
        claim = await store.find_claim(namespace, key)
        if claim is not None:
            return subject_type, claim.stream_id
    return None


def takes_deliveries(subject: ProviderRecordedAggregate) -> bool:
    """A payment the provider has not answered for yet has no expected amount to count against:
    its deliveries wait as unmatched and apply once it is taken."""
    return not isinstance(subject, Payment) or subject.submission is Submission.ACCEPTED
