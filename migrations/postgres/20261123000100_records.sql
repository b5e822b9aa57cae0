-- Records the HTTP service keeps beside the chain (API keys, invites, TOTP enrolments,
-- idempotency answers, HMAC nonces), typed by the service and stored as JSON under a
-- kind, with a version for compare-and-set. Secrets are never stored in the clear: key
-- and invite secrets only as SHA-256 hashes, TOTP and HMAC secrets encrypted (DESIGN 5).
CREATE TABLE records (
    tenant_id  text   NOT NULL,
    kind       text   NOT NULL,
    id         text   NOT NULL,
    version    bigint NOT NULL CHECK (version >= 1),
    value      text   NOT NULL,
    CONSTRAINT records_pkey PRIMARY KEY (tenant_id, kind, id)
);
ALTER TABLE records ENABLE ROW LEVEL SECURITY;
ALTER TABLE records FORCE ROW LEVEL SECURITY;
CREATE POLICY records_tenant_isolation ON records
    USING (tenant_id = current_setting('ledger.tenant', true))
    WITH CHECK (tenant_id = current_setting('ledger.tenant', true));

-- Which tenant a credential id (an API key id or an invite id, both random and globally
-- unique) belongs to: the one lookup made before the tenant is known. It holds no
-- secret and no tenant data beyond the mapping, so it has no row-level security.
CREATE TABLE credential_index (
    id        text NOT NULL,
    tenant_id text NOT NULL,
    CONSTRAINT credential_index_pkey PRIMARY KEY (id)
);
