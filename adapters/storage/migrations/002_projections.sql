-- Read models built by projections from the event log, and each projection's position.
-- Every table here can be emptied and rebuilt from position 0; the log is the only truth.

CREATE TABLE projection_positions (
    name            text        NOT NULL,
    partition       integer     NOT NULL,
    position        bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- A projection that raised on an event stops there and says which, until it is rebuilt.
    failed_position bigint,
    failure         text,
    PRIMARY KEY (name, partition)
);

-- Query read models: one row per payment / withdrawal, filter columns plus the full view.
CREATE TABLE payments_view (
    payment_id        uuid        PRIMARY KEY,
    provider          text        NOT NULL,
    provider_ref      text        NOT NULL,
    order_id          text        NOT NULL,
    customer_id       text,
    status            text        NOT NULL,
    coverage          text        NOT NULL,
    late              boolean     NOT NULL,
    expected_currency text        NOT NULL,
    expected_amount   numeric     NOT NULL,
    received          numeric     NOT NULL,
    expires_at        timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    version           integer     NOT NULL,
    view              jsonb       NOT NULL
);
CREATE INDEX payments_view_created ON payments_view (created_at DESC, payment_id DESC);
CREATE INDEX payments_view_provider ON payments_view (provider, created_at DESC, payment_id DESC);
CREATE INDEX payments_view_status ON payments_view (status, created_at DESC, payment_id DESC);
CREATE INDEX payments_view_coverage ON payments_view (coverage, created_at DESC, payment_id DESC);
CREATE INDEX payments_view_order ON payments_view (order_id);
CREATE INDEX payments_view_provider_ref ON payments_view (provider_ref);
-- The expiry sweeper looks for open payments past their deadline.
CREATE INDEX payments_view_open_expiry ON payments_view (expires_at)
    WHERE status IN ('pending', 'confirming');

CREATE TABLE withdrawals_view (
    withdrawal_id uuid        PRIMARY KEY,
    provider      text        NOT NULL,
    provider_ref  text,
    request_id    text        NOT NULL,
    customer_id   text,
    status        text        NOT NULL,
    currency      text        NOT NULL,
    requested     numeric     NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    version       integer     NOT NULL,
    view          jsonb       NOT NULL
);
CREATE INDEX withdrawals_view_created ON withdrawals_view (created_at DESC, withdrawal_id DESC);
CREATE INDEX withdrawals_view_provider ON withdrawals_view (provider, created_at DESC, withdrawal_id DESC);
CREATE INDEX withdrawals_view_status ON withdrawals_view (status, created_at DESC, withdrawal_id DESC);
CREATE INDEX withdrawals_view_request ON withdrawals_view (request_id);
CREATE INDEX withdrawals_view_open ON withdrawals_view (updated_at)
    WHERE status IN ('requested', 'submitted', 'processing');

-- The double-entry journal: at most one entry per event, never updated; balances are its sums.
CREATE TABLE journal_entries (
    partition    integer     NOT NULL,
    position     bigint      NOT NULL,
    stream_id    text        NOT NULL,
    event_type   text        NOT NULL,
    subject_type text        NOT NULL,
    subject_id   text        NOT NULL,
    provider     text        NOT NULL,
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (partition, position)
);
CREATE INDEX journal_entries_subject ON journal_entries (subject_id);

CREATE TABLE journal_postings (
    partition integer NOT NULL,
    position  bigint  NOT NULL,
    line      integer NOT NULL,
    account   text    NOT NULL,
    currency  text    NOT NULL,
    kind      text    NOT NULL CHECK (kind IN ('posted', 'pending', 'reserved')),
    amount    numeric NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (partition, position, line)
);
CREATE INDEX journal_postings_account ON journal_postings (account, currency, partition, position);

CREATE TABLE account_balances (
    account  text    NOT NULL,
    currency text    NOT NULL,
    posted   numeric NOT NULL DEFAULT 0,
    pending  numeric NOT NULL DEFAULT 0,  -- unconfirmed funds and both sides of reservations
    reserved numeric NOT NULL DEFAULT 0,  -- the part of `pending` that holds funds back
    PRIMARY KEY (account, currency)
);

-- Funds reported for payments the ledger did not know, to reverse when they are matched.
CREATE TABLE journal_unmatched (
    provider   text    NOT NULL,
    dedupe_key text    NOT NULL,
    postings   jsonb   NOT NULL,
    matched    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (provider, dedupe_key)
);

-- Reconciliation items: open while their condition holds, cleared (kept) when it stops.
CREATE TABLE reconciliation_items (
    subject_type      text        NOT NULL,
    subject_id        text        NOT NULL,
    reason            text        NOT NULL,
    detected_position bigint      NOT NULL,
    provider          text        NOT NULL,
    currency          text        NOT NULL,
    expected          numeric,
    received          numeric,
    provider_reported numeric,
    difference        numeric     NOT NULL,
    detected_at       timestamptz NOT NULL,
    updated_position  bigint      NOT NULL,
    cleared_at        timestamptz,
    cleared_position  bigint,
    PRIMARY KEY (subject_type, subject_id, reason, detected_position)
);
CREATE UNIQUE INDEX reconciliation_items_one_open
    ON reconciliation_items (subject_type, subject_id, reason) WHERE cleared_at IS NULL;
CREATE INDEX reconciliation_items_open_by_reason
    ON reconciliation_items (reason, detected_at DESC) WHERE cleared_at IS NULL;
CREATE INDEX reconciliation_items_open_by_provider
    ON reconciliation_items (provider, detected_at DESC) WHERE cleared_at IS NULL;

-- The ledger's funds at each provider as reconciliation counts them, to compare with reports.
CREATE TABLE reconciliation_funds (
    provider text    NOT NULL,
    currency text    NOT NULL,
    posted   numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (provider, currency)
);
