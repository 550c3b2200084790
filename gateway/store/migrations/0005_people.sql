-- People of the console (SPEC §10): users, their roles per org, server-side sessions,
-- one-time invite links and sign-in throttling; audit entries also record the user agent.
-- Session ids and invite tokens are stored only as SHA-256 digests: a copy of this
-- database signs no one in.

CREATE TABLE users (
    id               bigserial PRIMARY KEY,
    email            text NOT NULL UNIQUE CHECK (email = lower(email) AND email LIKE '%_@_%'),
    name             text NOT NULL DEFAULT '',
    password_hash    text CHECK (password_hash LIKE '$argon2id$%'),  -- NULL: no local password
    disabled_at      timestamptz,
    created_at       timestamptz NOT NULL,
    last_sign_in_at  timestamptz
);

CREATE TABLE memberships (
    org         text NOT NULL REFERENCES orgs (slug) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (org, user_id)
);

CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE sessions (
    id_hash       bytea PRIMARY KEY CHECK (length(id_hash) = 32),  -- sha256 of the cookie's id
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,  -- absolute; the idle limit counts from last_seen_at
    revoked_at    timestamptz,
    client_ip     text,
    user_agent    text
);

CREATE INDEX sessions_user_idx ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE invites (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),  -- sha256 of the link's token
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org         text NOT NULL REFERENCES orgs (slug) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at  timestamptz NOT NULL,
    created_by  text NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

-- Sign-in attempts per bucket (an email's digest, or a client address) in a fixed window,
-- shared by every gateway process through the database they all use.
CREATE TABLE sign_in_attempts (
    bucket        text PRIMARY KEY,
    window_start  timestamptz NOT NULL,
    attempts      integer NOT NULL
);

ALTER TABLE audit_log ADD COLUMN user_agent text;
