-- The event log and checkpoints (DESIGN sections 4 and 5). Forward-only: never edit
-- this file once applied; add a new migration instead.
--
-- SQLite is single-process and has no row-level security: the store scopes every
-- statement by tenant_id. STRICT enforces column types; WITHOUT ROWID clusters rows by
-- (tenant_id, seq), the order a tenant is loaded in.

CREATE TABLE events (
    tenant_id TEXT    NOT NULL,
    seq       INTEGER NOT NULL CHECK (seq >= 1),
    id        TEXT    NOT NULL CHECK (length(id) = 36),
    -- RFC 3339, six fractional digits and Z: sorts as time does.
    at        TEXT    NOT NULL,
    actor     TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    prev      BLOB    NOT NULL CHECK (length(prev) = 32),
    hash      BLOB    NOT NULL CHECK (length(hash) = 32),
    -- JCS of the envelope without `hash`: exactly the bytes that were hashed.
    canonical BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, id)
) STRICT, WITHOUT ROWID;

CREATE TABLE checkpoints (
    tenant_id TEXT    NOT NULL,
    seq       INTEGER NOT NULL CHECK (seq >= 1),
    head      BLOB    NOT NULL CHECK (length(head) = 32),
    at        TEXT    NOT NULL,
    key_id    TEXT    NOT NULL,
    sig       BLOB    NOT NULL CHECK (length(sig) = 64),
    PRIMARY KEY (tenant_id, seq),
    FOREIGN KEY (tenant_id, seq) REFERENCES events (tenant_id, seq)
) STRICT, WITHOUT ROWID;

-- Append-only.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'ledger: UPDATE on events is refused: the table is append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'ledger: DELETE on events is refused: the table is append-only');
END;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'ledger: UPDATE on checkpoints is refused: the table is append-only');
END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'ledger: DELETE on checkpoints is refused: the table is append-only');
END;
