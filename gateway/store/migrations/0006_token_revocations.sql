-- Revocations of user tokens (SPEC §11): `keygate tokens revoke --org SLUG --subject SUB
-- [--issuer ISS]` refuses that subject's tokens for that org issued (iat) up to
-- `revoked_before`. One row per (org, issuer, subject); issuer '' means every issuer. A
-- second revocation moves `revoked_before` forward (never back) and takes a new version.
--
-- Every committed change is announced on `keygate_token_revocations` as a JSON object
-- (the same message as the Redis channel `keygate:token-revocations`), so every gateway
-- hears it within a second, whoever made it and whatever that writer's view of Redis.

CREATE SEQUENCE token_revocations_version;

CREATE TABLE token_revocations (
    org             text NOT NULL REFERENCES orgs (slug),
    issuer          text NOT NULL DEFAULT '',
    subject         text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    revoked_before  timestamptz NOT NULL,
    revoked_by      text NOT NULL,
    version         bigint NOT NULL DEFAULT nextval('token_revocations_version'),
    PRIMARY KEY (org, issuer, subject)
);

-- Gateways read what changed since the version they know.
CREATE INDEX token_revocations_version_idx ON token_revocations (version);

CREATE FUNCTION token_revocations_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keygate_token_revocations', json_build_object(
        'v', NEW.version,
        'org', NEW.org,
        'iss', NEW.issuer,
        'sub', NEW.subject,
        'before', extract(epoch FROM NEW.revoked_before)
    )::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER token_revocations_notify AFTER INSERT OR UPDATE ON token_revocations
    FOR EACH ROW EXECUTE FUNCTION token_revocations_notify();
