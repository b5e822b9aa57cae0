-- Read models folded from the chain by the projections crate (balances, the payouts
-- view, the audit view) and the cursor they reflect. A cache: everything here can be
-- rebuilt from the chain (`ledger-api projections rebuild`). The projector writes the
-- rows of a page of events and moves the cursor in ONE transaction, compare-and-set on
-- the cursor's seq (the loser of a race between two processes rolls back), so the rows
-- always reflect exactly the events up to the cursor.
--
-- tenant_id leads every primary key; no foreign keys (nothing crosses tenants, and the
-- rows are a cache of the chain); row-level security as on the chain.

CREATE TABLE projection_cursors (
    tenant_id      text   NOT NULL,
    -- The last seq folded in (0: nothing yet).
    seq            bigint NOT NULL CHECK (seq >= 0),
    -- The approval rules in force (JSON, as policy.updated carries them): the payouts
    -- view records how many approvals each payout needs.
    approval_rules text   NOT NULL,
    CONSTRAINT projection_cursors_pkey PRIMARY KEY (tenant_id)
);

CREATE TABLE projection_balances (
    tenant_id text    NOT NULL,
    account   text    NOT NULL,
    currency  text    NOT NULL,
    available numeric NOT NULL,
    held      numeric NOT NULL,
    released  numeric NOT NULL,
    deposited numeric NOT NULL,
    CONSTRAINT projection_balances_pkey PRIMARY KEY (tenant_id, account)
);

CREATE TABLE projection_payouts (
    tenant_id          text        NOT NULL,
    payout             text        NOT NULL,
    status             text        NOT NULL,
    account            text        NOT NULL,
    payee              text        NOT NULL,
    amount             numeric     NOT NULL,
    currency           text        NOT NULL,
    reference          text        NOT NULL,
    approvals_required integer     NOT NULL,
    requested_by       text        NOT NULL,
    requested_at       timestamptz NOT NULL,
    requested_seq      bigint      NOT NULL,
    -- [{"by","at","seq"}], in order.
    approvals          jsonb       NOT NULL,
    authorized_by      text,
    authorized_at      timestamptz,
    authorized_seq     bigint,
    executed_by        text,
    executed_at        timestamptz,
    executed_seq       bigint,
    released_by        text,
    released_at        timestamptz,
    released_seq       bigint,
    -- Rejected, failed or cancelled: who, when, why.
    ended_by           text,
    ended_at           timestamptz,
    ended_seq          bigint,
    ended_reason       text,
    CONSTRAINT projection_payouts_pkey PRIMARY KEY (tenant_id, payout)
);
-- Listing in request order (the cursor), filtered by status or account.
CREATE UNIQUE INDEX projection_payouts_by_seq ON projection_payouts (tenant_id, requested_seq);
CREATE INDEX projection_payouts_by_status ON projection_payouts (tenant_id, status, requested_seq);
CREATE INDEX projection_payouts_by_account ON projection_payouts (tenant_id, account, requested_seq);

-- One row per decided command (accepted, or denied and recorded as command.rejected).
CREATE TABLE projection_audit (
    tenant_id  text        NOT NULL,
    seq        bigint      NOT NULL CHECK (seq >= 1),
    at         timestamptz NOT NULL,
    actor      text        NOT NULL,
    action     text        NOT NULL,
    subject    text        NOT NULL,
    result     text        NOT NULL CHECK (result IN ('accepted', 'denied')),
    reason     text,
    request_id text,
    CONSTRAINT projection_audit_pkey PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX projection_audit_by_actor ON projection_audit (tenant_id, actor, seq);
CREATE INDEX projection_audit_by_action ON projection_audit (tenant_id, action, seq);

ALTER TABLE projection_cursors ENABLE ROW LEVEL SECURITY;
ALTER TABLE projection_cursors FORCE ROW LEVEL SECURITY;
CREATE POLICY projection_cursors_tenant_isolation ON projection_cursors
    USING (tenant_id = current_setting('ledger.tenant', true))
    WITH CHECK (tenant_id = current_setting('ledger.tenant', true));

ALTER TABLE projection_balances ENABLE ROW LEVEL SECURITY;
ALTER TABLE projection_balances FORCE ROW LEVEL SECURITY;
CREATE POLICY projection_balances_tenant_isolation ON projection_balances
    USING (tenant_id = current_setting('ledger.tenant', true))
    WITH CHECK (tenant_id = current_setting('ledger.tenant', true));

ALTER TABLE projection_payouts ENABLE ROW LEVEL SECURITY;
ALTER TABLE projection_payouts FORCE ROW LEVEL SECURITY;
CREATE POLICY projection_payouts_tenant_isolation ON projection_payouts
    USING (tenant_id = current_setting('ledger.tenant', true))
    WITH CHECK (tenant_id = current_setting('ledger.tenant', true));

ALTER TABLE projection_audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE projection_audit FORCE ROW LEVEL SECURITY;
CREATE POLICY projection_audit_tenant_isolation ON projection_audit
    USING (tenant_id = current_setting('ledger.tenant', true))
    WITH CHECK (tenant_id = current_setting('ledger.tenant', true));
