-- Records the HTTP service keeps beside the chain (API keys, invites, TOTP enrolments,
-- idempotency answers, HMAC nonces), typed by the service and stored as JSON under a
-- kind, with a version for compare-and-set. Secrets are never stored in the clear: key
-- and invite secrets only as SHA-256 hashes, TOTP and HMAC secrets encrypted (DESIGN 5).
CREATE TABLE records (
    tenant_id  TEXT   NOT NULL,
    kind       TEXT   NOT NULL,
    id         TEXT   NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    value      TEXT   NOT NULL,
    CONSTRAINT records_pkey PRIMARY KEY (tenant_id, kind, id)
);

-- Which tenant a credential id (an API key id or an invite id, both random and globally
-- unique) belongs to: the one lookup made before the tenant is known.
CREATE TABLE credential_index (
    id        TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    CONSTRAINT credential_index_pkey PRIMARY KEY (id)
);
