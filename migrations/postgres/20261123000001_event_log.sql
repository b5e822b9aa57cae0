-- The event log and checkpoints (DESIGN sections 4 and 5). Forward-only: never edit
-- this file once applied; add a new migration instead.
--
-- Every table leads its primary key with tenant_id and has no cross-tenant foreign key,
-- so the schema can be distributed by tenant_id.

CREATE TABLE events (
    tenant_id text        NOT NULL,
    seq       bigint      NOT NULL CHECK (seq >= 1),
    id        uuid        NOT NULL,
    at        timestamptz NOT NULL,
    actor     text        NOT NULL,
    kind      text        NOT NULL,
    prev      bytea       NOT NULL CHECK (octet_length(prev) = 32),
    hash      bytea       NOT NULL CHECK (octet_length(hash) = 32),
    -- JCS of the envelope without `hash`: exactly the bytes that were hashed.
    canonical bytea       NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (tenant_id, seq),
    CONSTRAINT events_tenant_id_id_key UNIQUE (tenant_id, id)
);

CREATE TABLE checkpoints (
    tenant_id text        NOT NULL,
    seq       bigint      NOT NULL CHECK (seq >= 1),
    head      bytea       NOT NULL CHECK (octet_length(head) = 32),
    at        timestamptz NOT NULL,
    key_id    text        NOT NULL,
    sig       bytea       NOT NULL CHECK (octet_length(sig) = 64),
    CONSTRAINT checkpoints_pkey PRIMARY KEY (tenant_id, seq),
    -- Same tenant by construction: the key includes tenant_id.
    CONSTRAINT checkpoints_event_fkey FOREIGN KEY (tenant_id, seq)
        REFERENCES events (tenant_id, seq)
);

-- Append-only: UPDATE, DELETE and TRUNCATE are refused by trigger. Triggers fire for
-- the table owner and for superusers too (short of disabling them explicitly, which
-- docs/OPERATIONS.md treats as an incident).
CREATE FUNCTION ledger_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger: % on % is refused: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER checkpoints_append_only
    BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER checkpoints_no_truncate
    BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Row-level security keyed by the per-transaction setting ledger.tenant, which the store
-- sets with set_config('ledger.tenant', $1, true) at the start of every transaction.
-- Unset (NULL) matches nothing. FORCE: the table owner is subject too; only superusers
-- and BYPASSRLS roles are not.
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY events_tenant_isolation ON events
    USING (tenant_id = current_setting('ledger.tenant', true))
    WITH CHECK (tenant_id = current_setting('ledger.tenant', true));

ALTER TABLE checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY checkpoints_tenant_isolation ON checkpoints
    USING (tenant_id = current_setting('ledger.tenant', true))
    WITH CHECK (tenant_id = current_setting('ledger.tenant', true));
