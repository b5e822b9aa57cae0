-- Group commit in one round trip (DESIGN section 6). Forward-only: never edit this file
-- once applied; add a new migration instead.
--
-- ledger_append appends the batches of one or more tenants in the caller's transaction
-- (one statement: called on its own, it is its own transaction and commit). For each
-- batch, in tenant order (so that two callers take the advisory locks in the same
-- order and cannot deadlock), it sets ledger.tenant for row-level security, takes the
-- tenant's advisory lock (the same key as the store's single-tenant path), compares
-- the chain's head with the head the batch was sealed on, refuses an event id the
-- chain already holds, and inserts the rows. Each batch gets its own outcome row:
-- 'ok' (with the new head), 'conflict' (with the head found) or 'duplicate_id'.
-- A refused batch writes nothing and leaves the others standing.
--
-- SECURITY INVOKER (the default): it runs with the caller's grants and under the
-- caller's row-level security; it needs no privilege the service role lacks.
--
-- Rows are passed flattened: batch i's rows are p_seq[p_first[i] .. p_first[i] +
-- p_count[i] - 1], and likewise for the other row arrays.

CREATE FUNCTION ledger_append(
    p_tenant        text[],
    p_expected_seq  bigint[],
    p_expected_hash bytea[],
    p_first         integer[],
    p_count         integer[],
    p_seq           bigint[],
    p_id            text[],
    p_at            text[],
    p_actor         text[],
    p_kind          text[],
    p_prev          bytea[],
    p_hash          bytea[],
    p_canonical     bytea[]
) RETURNS TABLE (batch integer, outcome text, head_seq bigint, head_hash bytea)
LANGUAGE plpgsql
AS $$
DECLARE
    b          integer;
    first_row  integer;
    last_row   integer;
    found_seq  bigint;
    found_hash bytea;
BEGIN
    FOR b IN
        SELECT t.ord::integer FROM unnest(p_tenant) WITH ORDINALITY AS t(tenant, ord)
        ORDER BY t.tenant, t.ord
    LOOP
        PERFORM set_config('ledger.tenant', p_tenant[b], true);
        PERFORM pg_advisory_xact_lock(
            hashtextextended('payout-ledger/tenant:' || p_tenant[b], 0));
        found_seq := NULL;
        found_hash := NULL;
        SELECT e.seq, e.hash INTO found_seq, found_hash FROM events e
            WHERE e.tenant_id = p_tenant[b] ORDER BY e.seq DESC LIMIT 1;
        IF coalesce(found_seq, 0) <> p_expected_seq[b]
           OR (found_seq IS NOT NULL AND found_hash <> p_expected_hash[b]) THEN
            batch := b; outcome := 'conflict';
            head_seq := coalesce(found_seq, 0); head_hash := found_hash;
            RETURN NEXT;
            CONTINUE;
        END IF;
        first_row := p_first[b];
        last_row := p_first[b] + p_count[b] - 1;
        IF EXISTS (SELECT 1 FROM events e WHERE e.tenant_id = p_tenant[b]
                   AND e.id = ANY (p_id[first_row:last_row]::uuid[])) THEN
            batch := b; outcome := 'duplicate_id';
            head_seq := found_seq; head_hash := found_hash;
            RETURN NEXT;
            CONTINUE;
        END IF;
        INSERT INTO events (tenant_id, seq, id, at, actor, kind, prev, hash, canonical)
        SELECT p_tenant[b], r.seq, r.id::uuid, r.at::timestamptz, r.actor, r.kind, r.prev, r.hash, r.canonical
        FROM unnest(p_seq[first_row:last_row], p_id[first_row:last_row],
                    p_at[first_row:last_row], p_actor[first_row:last_row],
                    p_kind[first_row:last_row], p_prev[first_row:last_row],
                    p_hash[first_row:last_row], p_canonical[first_row:last_row])
             AS r(seq, id, at, actor, kind, prev, hash, canonical);
        batch := b; outcome := 'ok';
        head_seq := p_seq[last_row]; head_hash := p_hash[last_row];
        RETURN NEXT;
    END LOOP;
    PERFORM set_config('ledger.tenant', '', true);
END;
$$;

REVOKE ALL ON FUNCTION ledger_append(text[], bigint[], bytea[], integer[], integer[],
    bigint[], text[], text[], text[], text[], bytea[], bytea[], bytea[]) FROM PUBLIC;
