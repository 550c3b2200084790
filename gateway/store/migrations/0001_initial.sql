-- Orgs, API keys and the append-only audit log.

CREATE TABLE orgs (
    slug        text PRIMARY KEY CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id             text PRIMARY KEY CHECK (id ~ '^[0-9A-Za-z]{8}$'),
    org            text NOT NULL REFERENCES orgs (slug),
    name           text NOT NULL,
    prefix         text NOT NULL,
    env            text NOT NULL CHECK (env IN ('live', 'test')),
    secret_hash    text NOT NULL CHECK (secret_hash LIKE '$argon2id$%'),
    scopes         text[] NOT NULL DEFAULT '{}',
    metadata       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL,
    created_by     text NOT NULL,
    expires_at     timestamptz,
    last_used_at   timestamptz,
    revoked_at     timestamptz,
    revoked_by     text,
    revoke_reason  text,
    rolled_from    text REFERENCES api_keys (id),
    -- Bumped on every change; Redis cache fills never overwrite a newer version.
    version        bigint NOT NULL DEFAULT 1
);

-- Listing a given org's keys, newest first, with keyset pagination.
CREATE INDEX api_keys_org_created_idx ON api_keys (org, created_at DESC, id DESC);

CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    org          text NOT NULL,
    key_id       text,
    action       text NOT NULL,
    principal    text NOT NULL,
    old_scopes   text[],
    new_scopes   text[],
    client_ip    text,
    request_id   text,
    traceparent  text,
    details      jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_org_idx ON audit_log (org, id DESC);
CREATE INDEX audit_log_key_idx ON audit_log (key_id, id DESC) WHERE key_id IS NOT NULL;

-- Append-only: the database itself refuses edits of history.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
