"""The session's secrets, and the rule that no issued key may ever be logged.

One module, so that every suite shares one KEYGATE_SECRET (a key made through one gateway
verifies on another), one root admin token, and one list of the full keys handed out.
"""

from __future__ import annotations

import secrets

SECRET = secrets.token_urlsafe(48)  # KEYGATE_SECRET of every gateway the tests start
ROOT_TOKEN = "root-" + secrets.token_urlsafe(32)  # KEYGATE_ADMIN_TOKEN, unless a test says
# Every full key (and every key-shaped string sent) this session: none may be logged.
ISSUED: list[str] = []


def issued(secret: str) -> str:
    """Remember a full key handed out, so `assert_no_key_in` looks for it; return it."""
    ISSUED.append(secret)
    return secret


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_no_key_in(output: str, where: str) -> None:
    """No key issued in this session, nor KEYGATE_SECRET or the root admin token, appears
    in `output` (a process's logs, say)."""
    leaked = [k[:12] + "…" for k in ISSUED if k in output]
    assert not leaked, f"full API keys found in {where}: {leaked}"
    assert ROOT_TOKEN not in output, f"the root admin token was logged in {where}"
    assert SECRET not in output, f"KEYGATE_SECRET was logged in {where}"
