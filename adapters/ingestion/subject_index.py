"""Where a payment or withdrawal is found from what a provider calls it: claims taken when it was
recorded (order or request id) and when the provider took it (its reference). Payment and
withdrawal creation take these claims; deliveries and their matching read them."""

from __future__ import annotations

from collections.abc import Iterable

from adapters.storage.postgres_store import PostgresEventStore
from ledger.commands import PaymentReference, PaymentUpdate, WithdrawalReference, WithdrawalUpdate
from ledger.payment import Payment, Submission
from ledger.ports import Claim
from ledger.recording import ProviderRecordedAggregate
from ledger.withdrawal import Withdrawal

PAYMENT_ORDER = "payment_order"
PAYMENT_REF = "payment_ref"
WITHDRAWAL_REQUEST = "withdrawal_request"
WITHDRAWAL_REF = "withdrawal_ref"



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


async def claims_named(
    store: PostgresEventStore, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Claim]:
    """The claims `keys` (namespace, key) that are held, in one query: the applier resolves a
    whole pass of deliveries this way."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await store.pool.fetch(
        "SELECT c.namespace, c.key, c.stream_id, c.value FROM claims c"
        " JOIN unnest($1::text[], $2::text[]) AS w(namespace, key)"
        " ON c.namespace = w.namespace AND c.key = w.key",
        [namespace for namespace, _ in wanted],
        [key for _, key in wanted],
    )
    return {
        (row["namespace"], row["key"]): Claim(
            row["namespace"], row["key"], row["stream_id"], row["value"]
        )
        for row in rows
    }


async def streams_named(
    store: PostgresEventStore, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The streams holding each of the claims `keys` (those held by none are absent)."""
    return {key: claim.stream_id for key, claim in (await claims_named(store, keys)).items()}


def takes_deliveries(subject: ProviderRecordedAggregate) -> bool:
    """A payment the provider has not answered for yet has no expected amount to count against:
    its deliveries wait as unmatched and apply once it is taken."""
    return not isinstance(subject, Payment) or subject.submission is Submission.ACCEPTED
