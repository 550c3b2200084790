"""User tokens' administration (SPEC §11): revoking a person's tokens for an org."""
