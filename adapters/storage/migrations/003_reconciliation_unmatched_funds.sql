-- Funds the journal holds in unmatched suspense, as reconciliation counts them: provider
-- balances are compared with everything the ledger holds at the provider, these included.
CREATE TABLE reconciliation_unmatched_funds (
    provider   text    NOT NULL,
    dedupe_key text    NOT NULL,
    currency   text    NOT NULL,
    posted     numeric NOT NULL,
    PRIMARY KEY (provider, dedupe_key, currency)
);
