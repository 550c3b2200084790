"""People of the console (SPEC §10): users, roles per org, sessions and invite links."""
