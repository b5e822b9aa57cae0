-- ledger_append, fourth version (the earlier ones are never edited): the same signature,
-- outcomes, locking order and checks, with less work per batch, which over many tenants is
-- about one command. The tenant scope and the advisory lock are taken by one statement,
-- and a batch of one event is inserted from the arrays' elements (VALUES) instead of
-- through eight array slices and unnest. Measured on the function alone (3000 calls of
-- three one-event batches, one transaction): 767 -> 579 ms, medians of four alternating
-- runs (docs/PERFORMANCE.md). CREATE OR REPLACE keeps the function's owner and grants.

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
        PERFORM set_config('ledger.tenant', p_tenant[b], true),
                pg_advisory_xact_lock(hashtextextended('payout-ledger/tenant:' || p_tenant[b], 0));
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
        IF p_count[b] = 1 THEN
            INSERT INTO events (tenant_id, seq, id, at, actor, kind, prev, hash, canonical)
            VALUES (p_tenant[b], p_seq[first_row], p_id[first_row]::uuid, p_at[first_row]::timestamptz,
                    p_actor[first_row], p_kind[first_row], p_prev[first_row], p_hash[first_row],
                    p_canonical[first_row]);
        ELSE
            INSERT INTO events (tenant_id, seq, id, at, actor, kind, prev, hash, canonical)
            SELECT p_tenant[b], r.seq, r.id::uuid, r.at::timestamptz, r.actor, r.kind, r.prev, r.hash, r.canonical
            FROM unnest(p_seq[first_row:last_row], p_id[first_row:last_row],
                        p_at[first_row:last_row], p_actor[first_row:last_row],
                        p_kind[first_row:last_row], p_prev[first_row:last_row],
                        p_hash[first_row:last_row], p_canonical[first_row:last_row])
                 AS r(seq, id, at, actor, kind, prev, hash, canonical);
        END IF;
        batch := b; outcome := 'ok';
        head_seq := p_seq[last_row]; head_hash := p_hash[last_row];
        RETURN NEXT;
    END LOOP;
    PERFORM set_config('ledger.tenant', '', true);
END;
$$;
