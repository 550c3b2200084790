"""Config files that are broken or built to hurt: each is one clear problem with its line,
found quickly and in little memory, never a traceback (through `keygate check-config`)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from gateway.cli import main

ROUTES = "upstreams: {u: {url: 'http://127.0.0.1:9'}}\nroutes: [{path: /a, upstream: u}]\n"


def billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        previous, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n" + ROUTES  # 9**10 strings once expanded


CASES: list[tuple[str, str | bytes, str]] = [
    ("billion laughs", billion_laughs(), "line 1: more than 200000 values once aliases"),
    ("alias of itself", "a: &a [*a]\n" + ROUTES, "line 1: nested more than 64 levels deep"),
    ("deep flow lists", "routes: " + "[" * 20000 + "]" * 20000 + "\n", "nested more than 64"),
    (
        "deep mappings",
        "routes:\n" + "".join(" " * i + f"k{i}:\n" for i in range(3000)),
        "nested more than 64 levels deep",
    ),
    ("not UTF-8", ROUTES.encode() + b"name: \xff\xfe\n", "line 3: not UTF-8 text (byte 84)"),
    ("tab indent", "upstreams:\n\tu: {url: 'http://x'}\n", "line 2: found character '\\t'"),
    ("duplicate key", ROUTES + "routes: []\n", "line 3: duplicate key 'routes'"),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_config_is_one_clear_problem(
    tmp_path: Path, text: str | bytes, expected: str
) -> None:
    path = tmp_path / "keygate.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = main(["check-config", "--config", str(path)], out=out, err=err)
    assert time.monotonic() - started < 10
    assert code == 1 and out.getvalue() == ""
    assert err.getvalue().startswith(f"{path}: ") and expected in err.getvalue(), err.getvalue()
    assert "Traceback" not in err.getvalue() and len(err.getvalue().splitlines()) == 1


def test_aliases_within_the_limit_still_work(tmp_path: Path) -> None:
    path = tmp_path / "keygate.yaml"
    path.write_text(
        "upstreams: {u: {url: 'http://127.0.0.1:9'}}\n"
        "routes:\n"
        "  - {path: /a, upstream: u, scopes: &read [read]}\n"
        "  - {path: /b, upstream: u, scopes: *read}\n"
    )
    out, err = io.StringIO(), io.StringIO()
    assert main(["check-config", "--config", str(path)], out=out, err=err) == 0, err.getvalue()
