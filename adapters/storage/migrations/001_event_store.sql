-- The append-only event log, its per-partition head rows, and claims (unique keys reserved
-- atomically with an append: webhook dedupe keys, idempotency keys, provider references).

CREATE TABLE log_heads (
    partition integer PRIMARY KEY,
    position  bigint  NOT NULL,
    hash      bytea   NOT NULL
);
INSERT INTO log_heads (partition, position, hash) VALUES (0, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);

CREATE TABLE events (
    partition   integer     NOT NULL,
    position    bigint      NOT NULL,
    stream_id   text        NOT NULL,
    version     integer     NOT NULL CHECK (version >= 1),
    type        text        NOT NULL,
    payload     bytea       NOT NULL,
    metadata    jsonb       NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL,
    prev_hash   bytea       NOT NULL,
    hash        bytea       NOT NULL,
    PRIMARY KEY (partition, position),
    UNIQUE (stream_id, version)
);

-- The database itself refuses to change history, whoever asks.
CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER events_refuse_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

CREATE TABLE claims (
    namespace text   NOT NULL,
    key       text   NOT NULL,
    stream_id text   NOT NULL,
    value     text   NOT NULL DEFAULT '',
    PRIMARY KEY (namespace, key)
);
CREATE INDEX claims_by_stream ON claims (stream_id);
