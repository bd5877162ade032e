-- Open reconciliation items by detection time alone (GET /v1/reconciliation/items?from=&to=
-- without reason or provider): the benchmark on 1,000,000 payments found that query scanning
-- the whole table (about 60 ms) for want of this index.
CREATE INDEX reconciliation_items_open_by_time
    ON reconciliation_items (detected_at DESC, detected_position DESC) WHERE cleared_at IS NULL;
