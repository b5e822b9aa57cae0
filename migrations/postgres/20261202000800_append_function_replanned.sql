-- ledger_append, second version (the first is 20261201000700_append_function.sql, which
-- is never edited): the same signature, outcomes and locking, but the check for event
-- ids the chain already holds is planned at each call. PL/pgSQL caches a generic plan
-- per session; the first one, made while `events` was nearly empty, found a tenant's
-- events through the index by tenant_id alone and filtered the ids, so every append
-- read all of the tenant's events (a hot tenant's commits took 30-200 ms at 10 000
-- events). CREATE OR REPLACE keeps the function's owner and grants.

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
    duplicate  boolean;
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
        -- Planned at each call (EXECUTE): a plan cached by this session while the
        -- table was small looked the ids up by tenant alone and scanned every event
        -- of the tenant, so each append grew slower with the chain.
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM events e WHERE e.tenant_id = $1 '
                'AND e.id = ANY ($2))'
            INTO duplicate
            USING p_tenant[b], p_id[first_row:last_row]::uuid[];
        IF duplicate THEN
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

