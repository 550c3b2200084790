"""Do all gateways sharing this Redis have the same KEYGATE_SECRET? A check value says.

Redis verifiers are keyed by the server secret (key_cache.py, field `b.<fp>`), so an
instance with another secret never finds them: it silently runs argon2 for every key it
has not verified itself. To see that, every gateway keeps a check value,
HMAC-SHA-256(secret, "keygate-secret-check"), under `keygate:secret-check`: the first to
come sets it; the others compare theirs. The value reveals nothing usable about the
secret (it is not the verifier key), and it expires when no instance with that secret
refreshes it, so after a fleet-wide rotation the new secret's value takes over by itself.
"""

from __future__ import annotations

import hashlib
import hmac

import redis.asyncio as aioredis

CHECK_KEY = "keygate:secret-check"

# Set when absent; refresh the expiry when equal; 1 when this secret's value is (now)
# there, 0 when another is. One round trip, atomic: no instance sees a half-made check.
_AGREE = """
local current = redis.call('GET', KEYS[1])
if (not current) or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


def check_value(server_secret: bytes) -> str:
    return hmac.new(server_secret, b"keygate-secret-check", hashlib.sha256).hexdigest()[:32]


class SecretCheck:
    """This instance's side of the check, on the key cache's Redis client."""

    def __init__(self, client: aioredis.Redis, server_secret: bytes, ttl: float) -> None:
        self.value = check_value(server_secret)
        self.ttl_ms = max(1, int(ttl * 1000))
        self._agree = client.register_script(_AGREE)

    async def agrees(self) -> bool:
        """True when the secret recorded in Redis is ours (recording it if none is);
        raises the client's errors when Redis does not answer."""
        return bool(await self._agree(keys=[CHECK_KEY], args=[self.value, self.ttl_ms]))
