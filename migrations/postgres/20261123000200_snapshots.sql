-- Snapshots of a tenant's state at a seq: a cache, checked against the chain when
-- loaded (the event at `seq` must hash to `head`) and rebuildable from the chain.
CREATE TABLE snapshots (
    tenant_id  text   NOT NULL,
    seq        bigint NOT NULL CHECK (seq >= 1),
    head       bytea  NOT NULL CHECK (octet_length(head) = 32),
    state      text   NOT NULL,
    CONSTRAINT snapshots_pkey PRIMARY KEY (tenant_id, seq)
);
ALTER TABLE snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE snapshots FORCE ROW LEVEL SECURITY;
CREATE POLICY snapshots_tenant_isolation ON snapshots
    USING (tenant_id = current_setting('ledger.tenant', true))
    WITH CHECK (tenant_id = current_setting('ledger.tenant', true));
