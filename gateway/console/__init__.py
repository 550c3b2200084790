"""The console at /console/ on the admin listener (SPEC §10): sign-in and Settings → API keys."""
