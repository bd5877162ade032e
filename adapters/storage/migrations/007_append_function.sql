-- Appending in one statement (DESIGN.md, "Event store": group commit, the head's lock held for one
-- statement). `ledger_append` is called by the partition's writer with a batch of appends,
-- in autocommit: the call is its own transaction, so the head row's lock is taken by this one
-- statement and released by its commit.
--
-- Each append is accepted or refused on its own, in order, as if it ran alone after the ones
-- before it: its expected versions are checked against the log plus the earlier accepted appends
-- of the batch, and its claims are taken in a subtransaction (a refused append leaves none).
--
-- The hash chain is computed by the client (ledger/hashchain.py's canonical bytes), against the
-- head (`p_head_position`, `p_head_hash`) it believes and for the appends it believes accepted
-- (`p_assumed`). When either differs from what this statement finds under the lock, it writes
-- nothing (claims undone) and returns ok = false with the head and the outcomes it found: the
-- client recomputes and calls again.
--
-- Outcomes per append: 0 accepted, 1 version conflict (detail: message), 2 claim taken (detail:
-- holder stream, claim_index: which of the append's claims, 1-based).

CREATE FUNCTION ledger_append(
    p_partition       integer,
    p_head_position   bigint,
    p_head_hash       bytea,
    p_assumed         boolean[],
    -- expected versions, one row per (append, stream); next = the stream's version after it
    p_exp_append      integer[],
    p_exp_stream      text[],
    p_exp_version     integer[],
    p_exp_next        integer[],
    -- claims, one row per (append, claim)
    p_claim_append    integer[],
    p_claim_namespace text[],
    p_claim_key       text[],
    p_claim_stream    text[],
    p_claim_value     text[],
    p_claim_replaces  text[],
    -- the events of the appends assumed accepted, positions and hashes computed by the client
    p_position        bigint[],
    p_stream          text[],
    p_version         integer[],
    p_type            text[],
    p_payload         bytea[],
    p_metadata        text[],
    p_recorded_at     timestamptz,
    p_prev_hash       bytea[],
    p_hash            bytea[],
    OUT ok            boolean,
    OUT head_position bigint,
    OUT head_hash     bytea,
    OUT outcomes      integer[],
    OUT details       text[],
    OUT claim_index   integer[]
) LANGUAGE plpgsql AS $$
DECLARE
    n_appends    integer := coalesce(array_length(p_assumed, 1), 0);
    n_exp        integer := coalesce(array_length(p_exp_append, 1), 0);
    n_claims     integer := coalesce(array_length(p_claim_append, 1), 0);
    n_events     integer := coalesce(array_length(p_position, 1), 0);
    seen_stream  text[] := '{}';
    seen_version integer[] := '{}';
    e            integer := 1;  -- cursor in the expected-version rows
    c            integer := 1;  -- cursor in the claim rows
    i            integer;
    j            integer;
    k            integer;
    e_first      integer;
    c_first      integer;
    cur_version      integer;
    holder       text;
    refusal      text;
    refused_at   integer;
    matches      boolean := true;
BEGIN
    outcomes := array_fill(0, ARRAY[n_appends]);
    details := array_fill(NULL::text, ARRAY[n_appends]);
    claim_index := array_fill(NULL::integer, ARRAY[n_appends]);

    SELECT h.position, h.hash INTO head_position, head_hash
      FROM log_heads h WHERE h.partition = p_partition FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO log_heads (partition, position, hash)
             VALUES (p_partition, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
        ON CONFLICT DO NOTHING;
        SELECT h.position, h.hash INTO head_position, head_hash
          FROM log_heads h WHERE h.partition = p_partition FOR UPDATE;
    END IF;
    IF p_head_position IS DISTINCT FROM head_position OR p_head_hash IS DISTINCT FROM head_hash THEN
        ok := false;  -- computed against another head: nothing checked, nothing taken
        RETURN;
    END IF;

    BEGIN  -- undone as a whole when the client's assumptions do not hold
        FOR i IN 1 .. n_appends LOOP
            refusal := NULL;
            e_first := e;
            WHILE e <= n_exp AND p_exp_append[e] = i LOOP
                k := array_position(seen_stream, p_exp_stream[e]);
                IF k IS NOT NULL THEN
                    cur_version := seen_version[k];
                ELSE
                    SELECT coalesce(max(ev.version), 0) INTO cur_version
                      FROM events ev WHERE ev.stream_id = p_exp_stream[e];
                END IF;
                IF refusal IS NULL AND cur_version <> p_exp_version[e] THEN
                    refusal := format('stream %s is at version %s, writer expected %s',
                                      p_exp_stream[e], cur_version, p_exp_version[e]);
                END IF;
                e := e + 1;
            END LOOP;
            c_first := c;
            WHILE c <= n_claims AND p_claim_append[c] = i LOOP
                c := c + 1;
            END LOOP;
            IF refusal IS NOT NULL THEN
                outcomes[i] := 1;
                details[i] := refusal;
            ELSIF c > c_first THEN
                BEGIN  -- a refused append keeps none of its claims
                    FOR j IN c_first .. c - 1 LOOP
                        -- A taken claim moves only from the stream it `replaces`; the row lock
                        -- the upsert takes makes two requests replacing one holder take turns.
                        INSERT INTO claims AS cl (namespace, key, stream_id, value)
                             VALUES (p_claim_namespace[j], p_claim_key[j], p_claim_stream[j],
                                     p_claim_value[j])
                        ON CONFLICT (namespace, key) DO UPDATE
                               SET stream_id = excluded.stream_id, value = excluded.value
                             WHERE cl.stream_id = p_claim_replaces[j]
                        RETURNING cl.stream_id INTO holder;
                        IF holder IS NULL THEN
                            SELECT cl.stream_id INTO holder FROM claims cl
                             WHERE cl.namespace = p_claim_namespace[j] AND cl.key = p_claim_key[j];
                            refused_at := j - c_first + 1;
                            RAISE EXCEPTION USING ERRCODE = 'LA001', MESSAGE = coalesce(holder, '');
                        END IF;
                    END LOOP;
                EXCEPTION WHEN SQLSTATE 'LA001' THEN
                    outcomes[i] := 2;
                    details[i] := SQLERRM;
                    claim_index[i] := refused_at;
                END;
            END IF;
            IF outcomes[i] = 0 THEN
                FOR j IN e_first .. e - 1 LOOP
                    k := array_position(seen_stream, p_exp_stream[j]);
                    IF k IS NULL THEN
                        seen_stream := seen_stream || p_exp_stream[j];
                        seen_version := seen_version || p_exp_next[j];
                    ELSE
                        seen_version[k] := p_exp_next[j];
                    END IF;
                END LOOP;
            END IF;
            IF (outcomes[i] = 0) IS DISTINCT FROM coalesce(p_assumed[i], false) THEN
                matches := false;
            END IF;
        END LOOP;
        IF NOT matches THEN
            RAISE EXCEPTION USING ERRCODE = 'LA002';
        END IF;
    EXCEPTION WHEN SQLSTATE 'LA002' THEN
        ok := false;  -- the claims taken above are undone; the client recomputes
        RETURN;
    END;

    IF n_events > 0 THEN
        INSERT INTO events (partition, position, stream_id, version, type, payload, metadata,
                            recorded_at, prev_hash, hash)
        SELECT p_partition, u.position, u.stream_id, u.version, u.type, u.payload,
               u.metadata::jsonb, p_recorded_at, u.prev_hash, u.hash
          FROM unnest(p_position, p_stream, p_version, p_type, p_payload, p_metadata,
                      p_prev_hash, p_hash)
               AS u(position, stream_id, version, type, payload, metadata, prev_hash, hash);
        head_position := p_position[n_events];
        head_hash := p_hash[n_events];
        UPDATE log_heads SET position = head_position, hash = head_hash
         WHERE partition = p_partition;
        -- A hint for tailing readers; they poll as well, so a lost one stalls nothing.
        PERFORM pg_notify('ledger_events', p_partition || ':' || head_position);
    END IF;
    ok := true;
END;
$$;
