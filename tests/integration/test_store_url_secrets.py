"""A store URL's password never reaches output, even written the way people write them:
generated passwords hold '#', '/', '?' and '@', which end a URL's authority early unless
percent-encoded. `check-config --connect` (text and --json) and `serve` are run as an
operator runs them, with unreachable stores, and their whole output is searched."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.cli import run_keygate
from tests.support.configs import gateway_config
from tests.support.credentials import SECRET
from tests.support.gateway_process import closed_port, write_config

PASSWORDS = ["Pw#Ab12Cd34", "Pw/Ab12Cd34", "Pw?Ab12Cd34", "Pw@Ab12Cd34", "Pw:Ab12Cd34"]


def _fragments(password: str) -> list[str]:
    """The password and each piece of it a parser could quote (split at its delimiter)."""
    return [password, *(piece for piece in re.split(r"[#/?@:]", password) if len(piece) > 3)]


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    config = gateway_config(
        {"u": {"url": "http://127.0.0.1:9"}}, [{"path": "/**", "upstream": "u"}]
    )
    return write_config(tmp_path / "k.yaml", config)


@pytest.mark.parametrize("password", PASSWORDS)
async def test_no_part_of_a_store_password_is_printed(config_path: Path, password: str) -> None:
    port = closed_port()
    env = {
        "KEYGATE_SECRET": SECRET,
        "KEYGATE_DATABASE_URL": f"postgresql://keygate:{password}@127.0.0.1:{port}/keygate",
        "KEYGATE_REDIS_URL": f"redis://default:{password}@127.0.0.1:{port}/0",
    }
    for args in (("check-config", "--connect"), ("check-config", "--connect", "--json")):
        result = await run_keygate(config_path, env, *args)
        said = result.out + result.err
        assert result.code == 1, said
        assert "Traceback" not in said
        assert "postgres" in said and "redis" in said and "***" in said, said
        for fragment in _fragments(password):
            assert fragment not in said, (args, fragment, said)
