-- The events table in commit order: a rowid table (`pos`, assigned at insert) with
-- (tenant_id, seq) and (tenant_id, id) as unique indexes, instead of the rows clustered
-- by (tenant_id, seq) (WITHOUT ROWID). With many tenants committing together, clustered
-- rows put each event on its own tenant's last leaf, so a commit rewrote about one full
-- page per event and split leaves mid-tree; in commit order the rows of a commit share
-- the last pages of the table and only the small index entries scatter (100 tenants:
-- about a quarter fewer bytes written per command; docs/PERFORMANCE.md). A tenant still
-- loads in seq order, through the (tenant_id, seq) index. Same columns, same checks,
-- same append-only triggers.
--
-- Rebuilt together with checkpoints, whose foreign key names events: both are renamed
-- away (SQLite moves the checkpoints' reference to events_old with the rename), created
-- anew and copied, and the old ones dropped, children first, so foreign keys stay on
-- and every row is checked again on the way in. Forward-only: never edit once applied.

DROP TRIGGER events_no_update;
DROP TRIGGER events_no_delete;
DROP TRIGGER checkpoints_no_update;
DROP TRIGGER checkpoints_no_delete;

ALTER TABLE checkpoints RENAME TO checkpoints_old;
ALTER TABLE events RENAME TO events_old;

CREATE TABLE events (
    pos       INTEGER PRIMARY KEY,
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
    UNIQUE (tenant_id, seq),
    UNIQUE (tenant_id, id)
) STRICT;

INSERT INTO events (tenant_id, seq, id, at, actor, kind, prev, hash, canonical)
SELECT tenant_id, seq, id, at, actor, kind, prev, hash, canonical
FROM events_old
ORDER BY tenant_id, seq;

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

INSERT INTO checkpoints (tenant_id, seq, head, at, key_id, sig)
SELECT tenant_id, seq, head, at, key_id, sig
FROM checkpoints_old
ORDER BY tenant_id, seq;

DROP TABLE checkpoints_old;
DROP TABLE events_old;

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
