-- GET /v1/payments?provider=&status= (finance's commonest list): with one index per column the
-- 1M-payment bench saw a page read up to 66 rows per row returned.
CREATE INDEX payments_view_provider_status
    ON payments_view (provider, status, created_at DESC, payment_id DESC);
