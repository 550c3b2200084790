-- Negative caching of unknown key ids (gateway/auth/unknown_ids.py), and key changes
-- announced per statement.
--
-- 1. Ids ordered by code point, as Python compares strings: the database's default
--    collation may not (en_US sorts case-insensitively), so the gap query of an unknown
--    id (the nearest ids below and above it) says COLLATE "C", and this index serves it
--    (two short index scans, no sort).
-- 2. A new key is announced like any change on keygate_key_changes, so every gateway
--    drops the cached gap that held its id.
-- 3. Announcements per statement, not per row (replacing migration 0004's row trigger):
--    a statement changing one key still sends `<id>:<version>`; one changing many sends
--    them space-separated, up to ~7,000 bytes per notification. A bulk change by hand
--    (say, 50,000 keys revoked in one UPDATE) then costs every listening gateway ~250
--    notifications rather than 50,000: a flood of notifications stalled the workers'
--    event loops inside the driver, before any of Keygate's own code could pace it.

CREATE INDEX api_keys_id_c_idx ON api_keys ((id COLLATE "C"));

DROP TRIGGER api_keys_notify_change ON api_keys;
DROP FUNCTION api_keys_notify_change();

-- Announce (id, version) pairs: one notification per ~7,000 bytes (PostgreSQL's limit
-- is 8,000), ids in code-point order.
CREATE FUNCTION api_keys_announce(changed_ids text[], versions bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    FOR payload IN
        SELECT string_agg(c.id || ':' || c.version, ' ' ORDER BY c.id COLLATE "C")
        FROM (SELECT u.id, u.version,
                     sum(length(u.id) + 21) OVER (ORDER BY u.id COLLATE "C") / 7000 AS part
              FROM unnest(changed_ids, versions) AS u(id, version)) AS c
        GROUP BY c.part
    LOOP
        PERFORM pg_notify('keygate_key_changes', payload);
    END LOOP;
END;
$$;

CREATE FUNCTION api_keys_notify_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM api_keys_announce(array_agg(id), array_agg(version::bigint))
    FROM added HAVING count(*) > 0;
    RETURN NULL;
END;
$$;

CREATE FUNCTION api_keys_notify_updates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A change is a new version (a last-used stamp is not one).
    PERFORM api_keys_announce(array_agg(a.id), array_agg(a.version::bigint))
    FROM after_rows AS a JOIN before_rows AS b ON b.id = a.id
    WHERE b.version IS DISTINCT FROM a.version
    HAVING count(*) > 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify_insert AFTER INSERT ON api_keys
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION api_keys_notify_inserts();

CREATE TRIGGER api_keys_notify_update AFTER UPDATE ON api_keys
    REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows
    FOR EACH STATEMENT EXECUTE FUNCTION api_keys_notify_updates();
