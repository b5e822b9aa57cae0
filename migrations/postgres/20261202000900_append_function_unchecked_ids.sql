-- ledger_append, third version (the earlier ones, 20261201000700 and 20261202000800, are
-- never edited): the same signature, locking and head check, without the per-batch query
-- for event ids the chain already holds. That query was dynamic SQL, parsed and planned
-- at every batch (about half of the function's time over 100 tenants, where each batch
-- is one command). The unique key on (tenant_id, id) makes the check anyway: a duplicate
-- id now fails the whole call with unique_violation, and the store then retries each
-- batch alone, where the same failure names the batch (ledger-store/src/postgres.rs).
-- The 'duplicate_id' outcome is no longer produced. CREATE OR REPLACE keeps the
-- function's owner and grants.

CREATE OR REPLACE FUNCTION ledger_append(
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
