-- Lists filtered by customer (GET /v1/payments?customer_id=, /v1/withdrawals?customer_id=): the
-- benchmark on 1,000,000 payments found the payments query scanning the whole table.
CREATE INDEX payments_view_customer
    ON payments_view (customer_id, created_at DESC, payment_id DESC) WHERE customer_id IS NOT NULL;
CREATE INDEX withdrawals_view_customer
    ON withdrawals_view (customer_id, created_at DESC, withdrawal_id DESC)
    WHERE customer_id IS NOT NULL;
