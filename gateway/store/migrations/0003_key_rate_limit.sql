-- A key's own rate limit: at most rate_limit_requests requests per fixed window of
-- rate_limit_per seconds, counted over every route. Both NULL: no limit of its own.

ALTER TABLE api_keys
    ADD COLUMN rate_limit_requests integer CHECK (rate_limit_requests >= 1),
    ADD COLUMN rate_limit_per integer CHECK (rate_limit_per >= 1),
    ADD CONSTRAINT api_keys_rate_limit_whole
        CHECK ((rate_limit_requests IS NULL) = (rate_limit_per IS NULL));
