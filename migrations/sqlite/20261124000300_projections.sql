-- Read models folded from the chain by the projections crate (balances, the payouts
-- view, the audit view) and the cursor they reflect. A cache: everything here can be
-- rebuilt from the chain (`ledger-api projections rebuild`). The projector writes the
-- rows of a page of events and moves the cursor in ONE transaction, compare-and-set on
-- the cursor's seq, so the rows always reflect exactly the events up to the cursor.
-- Amounts are decimal text at the currency's scale (SQLite has no decimal type; never a
-- float). Times are RFC 3339 with six digits and Z, which sorts as time does.

CREATE TABLE projection_cursors (
    tenant_id      TEXT    NOT NULL,
    -- The last seq folded in (0: nothing yet).
    seq            INTEGER NOT NULL CHECK (seq >= 0),
    -- The approval rules in force (JSON, as policy.updated carries them): the payouts
    -- view records how many approvals each payout needs.
    approval_rules TEXT    NOT NULL,
    PRIMARY KEY (tenant_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE projection_balances (
    tenant_id TEXT NOT NULL,
    account   TEXT NOT NULL,
    currency  TEXT NOT NULL,
    available TEXT NOT NULL,
    held      TEXT NOT NULL,
    released  TEXT NOT NULL,
    deposited TEXT NOT NULL,
    PRIMARY KEY (tenant_id, account)
) STRICT, WITHOUT ROWID;

CREATE TABLE projection_payouts (
    tenant_id          TEXT    NOT NULL,
    payout             TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    account            TEXT    NOT NULL,
    payee              TEXT    NOT NULL,
    amount             TEXT    NOT NULL,
    currency           TEXT    NOT NULL,
    reference          TEXT    NOT NULL,
    approvals_required INTEGER NOT NULL,
    requested_by       TEXT    NOT NULL,
    requested_at       TEXT    NOT NULL,
    requested_seq      INTEGER NOT NULL,
    -- JSON array of {"by","at","seq"}, in order.
    approvals          TEXT    NOT NULL,
    authorized_by      TEXT,
    authorized_at      TEXT,
    authorized_seq     INTEGER,
    executed_by        TEXT,
    executed_at        TEXT,
    executed_seq       INTEGER,
    released_by        TEXT,
    released_at        TEXT,
    released_seq       INTEGER,
    -- Rejected, failed or cancelled: who, when, why.
    ended_by           TEXT,
    ended_at           TEXT,
    ended_seq          INTEGER,
    ended_reason       TEXT,
    PRIMARY KEY (tenant_id, payout)
) STRICT, WITHOUT ROWID;
-- Listing in request order (the cursor), filtered by status or account.
CREATE UNIQUE INDEX projection_payouts_by_seq ON projection_payouts (tenant_id, requested_seq);
CREATE INDEX projection_payouts_by_status ON projection_payouts (tenant_id, status, requested_seq);
CREATE INDEX projection_payouts_by_account ON projection_payouts (tenant_id, account, requested_seq);

-- One row per decided command (accepted, or denied and recorded as command.rejected).
CREATE TABLE projection_audit (
    tenant_id  TEXT    NOT NULL,
    seq        INTEGER NOT NULL CHECK (seq >= 1),
    at         TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    result     TEXT    NOT NULL CHECK (result IN ('accepted', 'denied')),
    reason     TEXT,
    request_id TEXT,
    PRIMARY KEY (tenant_id, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX projection_audit_by_actor ON projection_audit (tenant_id, actor, seq);
CREATE INDEX projection_audit_by_action ON projection_audit (tenant_id, action, seq);
