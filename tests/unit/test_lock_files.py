"""Reproducible installs (SPEC §9): one hash-checked lock for everything that installs.

`make`, CI and the image must install pinned, hash-checked versions, and the image's
runtime lock must pin exactly the versions the suite ran with (requirements.lock).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)", re.MULTILINE)


def pins(path: Path) -> dict[str, str]:
    text = path.read_text()
    found = {name.lower().replace("_", "-"): version for name, version in PIN.findall(text)}
    assert found, f"{path.name} pins nothing"
    # Every pin carries a hash, so `pip install --require-hashes` accepts the file.
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        if PIN.match(block):
            assert "--hash=sha256:" in block, block.splitlines()[0]
    return found


def test_runtime_lock_pins_what_the_suite_ran_with() -> None:
    full = pins(ROOT / "requirements.lock")
    runtime = pins(ROOT / "requirements-runtime.lock")
    differing = {n: (v, full.get(n)) for n, v in runtime.items() if full.get(n) != v}
    assert not differing, f"runtime lock disagrees with requirements.lock: {differing}"


def test_locks_satisfy_the_declared_ranges() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    full = pins(ROOT / "requirements.lock")
    declared = list(project["dependencies"])
    for extra in ("dev", "test", "speed"):
        declared += project["optional-dependencies"][extra]
    for text in declared:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-")
        assert name in full, f"{name} is declared but not locked"
        assert req.specifier.contains(Version(full[name])), (name, full[name], str(req))


def test_every_install_uses_a_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes --no-deps -r requirements.lock" in makefile
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes --no-deps -r requirements-runtime.lock" in dockerfile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
