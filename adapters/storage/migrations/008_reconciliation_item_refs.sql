-- Reconciliation items finance can act on: the merchant's reference (a payment's order id, a
-- withdrawal's request id), the provider's reference, and the status word the provider last gave
-- (its amount or balance is `provider_reported`).
ALTER TABLE reconciliation_items
    ADD COLUMN order_id        text,
    ADD COLUMN provider_ref    text,
    ADD COLUMN provider_status text;

-- The findings changed with these columns (provider_reported filled where the provider spoke, a
-- late payment one paid_late item): the read model is emptied and its position set to 0, so the
-- runner rebuilds it from the log, exactly as `ledger projections rebuild reconciliation` would.
TRUNCATE reconciliation_items, reconciliation_funds, reconciliation_unmatched_funds;
UPDATE projection_positions SET position = 0, failed_position = NULL, failure = NULL
    WHERE name = 'reconciliation';
