-- Webhook subscriptions (DESIGN section 8) are records beside the chain (kind `webhook`,
-- compare-and-set, the signing secret encrypted, row-level security as every record).
-- This index names the tenants that have one, so the delivery worker finds them in one
-- query instead of looking into every tenant. It holds ids only (no URL, no secret) and,
-- like credential_index, is read before a tenant is chosen, so it has no row-level
-- security.
CREATE TABLE webhook_index (
    tenant_id text NOT NULL,
    id        text NOT NULL,
    CONSTRAINT webhook_index_pkey PRIMARY KEY (tenant_id, id)
);
