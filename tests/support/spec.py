"""Names the SPEC fixes (§6, §8), written once for every test that checks them."""

# The fields of the `key` object the admin API and `keygate … --json` print (§6), with
# `rate_limit` (§3 step 9).
KEY_FIELDS = frozenset(
    {
        "id",
        "display_prefix",
        "org",
        "name",
        "scopes",
        "env",
        "status",
        "created_at",
        "created_by",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
        "metadata",
        "rolled_from",
        "rate_limit",
    }
)

# Every metric family the gateway may expose, and nothing else named keygate_*.
SPEC_METRICS = {
    "keygate_requests_total": "counter",
    "keygate_request_duration_seconds": "histogram",
    "keygate_upstream_duration_seconds": "histogram",
    "keygate_key_cache_requests_total": "counter",
    "keygate_key_verifications_total": "counter",
    "keygate_key_verification_duration_seconds": "histogram",
    "keygate_last_used_pending": "gauge",
    "keygate_last_used_flushes_total": "counter",
    "keygate_store_errors_total": "counter",
    "keygate_background_restarts_total": "counter",
    "keygate_store_up": "gauge",
    "keygate_admin_requests_total": "counter",
    "keygate_build_info": "gauge",
    "keygate_secret_mismatch": "gauge",  # beyond §8: KEYGATE_SECRET differs (issue 11)
    "keygate_check_requests_total": "counter",  # §12: checks by the API that asked
}

# prometheus_client's process metrics, one series per worker (label `worker`).
PROCESS_METRICS = {
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
}
