-- Snapshots of a tenant's state at a seq: a cache, checked against the chain when
-- loaded (the event at `seq` must hash to `head`) and rebuildable from the chain.
CREATE TABLE snapshots (
    tenant_id  TEXT    NOT NULL,
    seq        INTEGER NOT NULL CHECK (seq >= 1),
    head       BLOB    NOT NULL CHECK (length(head) = 32),
    state      TEXT    NOT NULL,
    CONSTRAINT snapshots_pkey PRIMARY KEY (tenant_id, seq)
);
