"""`keygate dev` from a fresh folder: embedded stores, demo upstream, a printed demo key
that works, a printed demo user token that works on the same route (the demo upstream
serving the demo issuer's JWKS), and Ctrl-C stopping everything it started. On the next
run: the same store ports, the printed `keygate keys create …` hint works as printed from
that folder, and a fresh token from the same issuer key, at the moved demo port."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from gateway.embedded import free_port

KEY = re.compile(r"kg_live_[0-9A-Za-z]{46}")
TOKEN = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


def _status(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _seen_upstream(url: str, credential: str) -> dict[str, str]:
    """GET through the gateway with `credential` as a bearer: the X-Keygate-* headers the
    demo upstream received (it echoes them), after a 200."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {credential}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        echoed = json.loads(response.read())
    return {k: v for k, v in echoed["headers"] if k.lower().startswith("x-keygate-")}


def _jwt_part(token: str, index: int) -> dict[str, object]:
    part = token.split(".")[index]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def _printed_token(text: str) -> str:
    """The demo user token of the last banner in `text`, checked against its curl line."""
    banner = text.rsplit("Keygate dev is up.", 1)[1]
    tokens = TOKEN.findall(banner)
    assert len(tokens) == 2 and tokens[0] == tokens[1], banner  # shown, then in a curl line
    return str(tokens[0])


def _wait_for(output: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = output.read_text(errors="replace")
        if pattern in text:
            return text
        assert proc.poll() is None, f"keygate dev exited early:\n{text}"
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} not printed within {timeout}s:\n{output.read_text()}")


def _clean_env() -> dict[str, str]:
    """The user's shell: no KEYGATE_* settings pointing anywhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KEYGATE_")}


def _start_dev(folder: Path, config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "dev", "--config", str(config), *extra],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_clean_env(),
        )


def _run_here(folder: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=folder, env=_clean_env(), capture_output=True, text=True, timeout=60
    )


def _state(folder: Path) -> dict[str, object]:
    state: dict[str, object] = json.loads((folder / ".keygate" / "dev.json").read_text())
    return state


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=30)


def test_dev_serves_a_working_demo_key_and_stops_cleanly(tmp_path: Path) -> None:
    source = yaml.safe_load(Path("config/dev.yaml").read_text())
    proxy, admin, upstream = free_port(), free_port(), free_port()
    source["listen"] = {"proxy": f"127.0.0.1:{proxy}", "admin": f"127.0.0.1:{admin}"}
    source["upstreams"]["demo"]["url"] = f"http://127.0.0.1:{upstream}"
    config = tmp_path / "dev.yaml"
    config.write_text(yaml.safe_dump(source))
    log = tmp_path / "dev.log"

    proc = _start_dev(tmp_path, config, log)
    try:
        text = _wait_for(log, "Press Ctrl-C", proc, 60)
        key = KEY.search(text)
        assert key is not None, text
        base = f"http://127.0.0.1:{proxy}"
        auth = {"Authorization": f"Bearer {key.group()}"}
        assert _status(f"{base}/api/v1/sessions/42", auth) == 200
        assert _status(f"{base}/api/v1/sessions/42") == 401
        assert _status(f"{base}/api/v1/sessions", auth, method="POST") == 403
        assert "curl" in text
        # A dashboard's user token and a script's key on the same route: both reach the
        # upstream, which is told which kind of credential it was.
        token = _printed_token(text)
        claims = _jwt_part(token, 1)
        assert claims["iss"] == f"http://127.0.0.1:{upstream}/_demo/issuer"
        assert (claims["sub"], claims["org"], claims["scope"]) == (
            "dashboard-user",
            "demo",
            "read events",
        )
        assert 3500 <= int(claims["exp"]) - int(claims["iat"]) <= 3600  # type: ignore[call-overload]
        route = f"{base}/api/v1/sessions/42"
        by_key = _seen_upstream(route, key.group())
        by_token = _seen_upstream(route, token)
        assert by_key["X-Keygate-Credential"] == "key" and by_key["X-Keygate-Org"] == "demo"
        assert by_token == {
            "X-Keygate-Credential": "user",
            "X-Keygate-Subject": "dashboard-user",
            "X-Keygate-Org": "demo",
            "X-Keygate-Scopes": "read events",
        }
        assert f"curl -i {route} -H 'Authorization: Bearer {token}'" in text
        assert (
            _status(f"{base}/api/v1/sessions", {"Authorization": f"Bearer {token}"}, "POST") == 403
        )
        issuer_key = tmp_path / ".keygate" / "demo-issuer.jwk"
        assert issuer_key.stat().st_mode & 0o777 == 0o600
        kid = _jwt_part(token, 0)["kid"]
        first = _state(tmp_path)
        assert first["pid"] == proc.pid
        # The CLI, run from this folder with no --config or KEYGATE_*, finds this run.
        listed = _run_here(
            tmp_path, [sys.executable, "-m", "gateway", "keys", "list", "--org", "demo", "--json"]
        )
        assert listed.returncode == 0, listed.stderr
        assert [k["name"] for k in json.loads(listed.stdout)["items"]] == ["demo key"]
    finally:
        code = _stop(proc)
    assert code == 0, log.read_text()
    assert (tmp_path / ".keygate" / "postgres" / "PG_VERSION").exists()
    pid_file = tmp_path / ".keygate" / "postgres" / "postmaster.pid"
    assert not pid_file.exists(), "postgres left running"
    assert _state(tmp_path)["pid"] is None
    # Stopped: the CLI no longer picks the dev stores up (it would wait on dead ports).
    stopped = _run_here(
        tmp_path, [sys.executable, "-m", "gateway", "keys", "list", "--org", "demo"]
    )
    assert stopped.returncode == 1 and "demo" not in stopped.stdout

    # Second run, proxy and demo upstream moved by --proxy-port and --demo-port: data kept,
    # the key is not shown again and still works, a fresh user token (same issuer key pair,
    # issuer URL at the new demo port) works too, the stores are back on their ports, and
    # the printed hint works as printed, from this folder, in a shell without KEYGATE_*.
    moved, demo_moved = free_port(), free_port()
    second_log = tmp_path / "dev-2.log"  # its own file: the whole banner, once
    proc = _start_dev(
        tmp_path, config, second_log, "--proxy-port", str(moved), "--demo-port", str(demo_moved)
    )
    try:
        text = _wait_for(second_log, "Press Ctrl-C", proc, 60)
        assert "cannot be shown again" in text
        assert _status(f"http://127.0.0.1:{moved}/api/v1/sessions/1", auth) == 200
        fresh_token = _printed_token(text)
        assert fresh_token != token
        assert _jwt_part(fresh_token, 0)["kid"] == kid
        assert _jwt_part(fresh_token, 1)["iss"] == f"http://127.0.0.1:{demo_moved}/_demo/issuer"
        seen = _seen_upstream(f"http://127.0.0.1:{moved}/api/v1/sessions/1", fresh_token)
        assert seen["X-Keygate-Credential"] == "user"
        second = _state(tmp_path)
        assert (second["postgres_port"], second["redis_port"]) == (
            first["postgres_port"],
            first["redis_port"],
        )
        hint = text.rsplit("Get a fresh one", 1)[1].splitlines()[1].strip()
        assert " keys create --org demo " in hint, hint
        made = _run_here(tmp_path, shlex.split(hint))
        assert made.returncode == 0, made.stderr
        fresh = KEY.search(made.stdout)
        assert fresh is not None, made.stdout
        assert (
            _status(f"http://127.0.0.1:{moved}/api/v1/sessions/1", {"X-API-Key": fresh.group()})
            == 200
        )
        # A second `keygate dev` in the same folder says so instead of failing midway.
        again = _run_here(
            tmp_path, [sys.executable, "-m", "gateway", "dev", "--config", str(config)]
        )
        assert again.returncode == 1
        assert again.stderr == (
            f"keygate: error: keygate dev is already running from this "
            f"folder (pid {proc.pid}); stop it with Ctrl-C first\n"
        )
    finally:
        assert _stop(proc) == 0
