"""Errors of sign-in. Both are ServiceErrors, so every surface answers them the same way."""

from __future__ import annotations

from gateway.keys.errors import ServiceError

# One message whether the email is unknown, the account disabled or has no password, or the
# password wrong: the answer must not tell which accounts exist.
SIGN_IN_FAILED = "That email and password do not match an account that can sign in."
SSO_NO_ACCOUNT = (
    "There is no Keygate account for this email (or it is disabled): ask an owner of your "
    "organisation to invite you."
)


class SignInFailed(ServiceError):
    code = "sign_in_failed"
    status = 401

    def __init__(self, message: str = SIGN_IN_FAILED) -> None:
        super().__init__(message)


class SignInThrottled(ServiceError):
    code = "too_many_attempts"
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many sign-in attempts. Try again in {_wait(retry_after)}.", field=None
        )
        self.retry_after = retry_after


def _wait(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = (seconds + 59) // 60
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
