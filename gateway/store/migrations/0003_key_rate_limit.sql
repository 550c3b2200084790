-- A key's own rate limit: at most rate_limit_requests requests per fixed window of
-- rate_limit_per seconds, counted over every route. Both NULL: no limit of its own.
-- The bounds are the service's (gateway/keys/rate_limits.py): at most 1,000,000,000
-- requests, windows from 1s to 365 days.

ALTER TABLE api_keys
    ADD COLUMN rate_limit_requests integer
        CHECK (rate_limit_requests BETWEEN 1 AND 1000000000),
    ADD COLUMN rate_limit_per integer CHECK (rate_limit_per BETWEEN 1 AND 31536000),
    ADD CONSTRAINT api_keys_rate_limit_whole
        CHECK ((rate_limit_requests IS NULL) = (rate_limit_per IS NULL));
