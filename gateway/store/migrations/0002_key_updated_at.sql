-- When a key last changed (scopes, name, expiry, revocation): gateways re-sync recently
-- changed keys into Redis after losing it, so a change made while Redis was unreachable
-- cannot linger in a stale Redis entry. last_used_at stamps do not count as changes.

ALTER TABLE api_keys ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
UPDATE api_keys SET updated_at = created_at;
CREATE INDEX api_keys_updated_idx ON api_keys (updated_at);

CREATE FUNCTION api_keys_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER api_keys_touch BEFORE UPDATE ON api_keys
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION api_keys_touch();
