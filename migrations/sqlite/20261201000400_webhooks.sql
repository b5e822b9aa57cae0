-- Webhook subscriptions (DESIGN section 8) are records beside the chain (kind `webhook`,
-- compare-and-set, the signing secret encrypted). This index names the tenants that
-- have one, so the delivery worker finds them in one query instead of looking into
-- every tenant. It holds ids only: no URL, no secret.
CREATE TABLE webhook_index (
    tenant_id TEXT NOT NULL,
    id        TEXT NOT NULL,
    CONSTRAINT webhook_index_pkey PRIMARY KEY (tenant_id, id)
);
