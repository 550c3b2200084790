-- Every committed change of a key (its version bumped) is announced on the channel
-- `keygate_key_changes` as `<id>:<version>`, by PostgreSQL itself: NOTIFY is delivered
-- on commit, to every listening session, whoever made the change and whatever that
-- writer's view of Redis. Gateways LISTEN on a dedicated connection (SPEC §5), so a
-- revocation reaches them within a second even when the revoker cannot reach Redis.

CREATE FUNCTION api_keys_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keygate_key_changes', NEW.id || ':' || NEW.version);
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify_change AFTER UPDATE ON api_keys
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION api_keys_notify_change();
