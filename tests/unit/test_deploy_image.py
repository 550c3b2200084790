"""deploy/Dockerfile and the build context (SPEC §9): pinned slim base, non-root, a health
check on the admin listener of the config it bakes in, and a `.dockerignore` that sends
what the Dockerfile copies and nothing else (no .venv, .keygate, .git, tests). Also: no
tracked file is listed in `.gitignore`."""

from __future__ import annotations

import posixpath
import re
import shutil

import pytest

from gateway.config import load_config
from tests.support.deploy import DOCKERFILE, ROOT, host_port, pinned, run


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        word, _, args = (pending + stripped).partition(" ")
        result.append((word.upper(), args.strip()))
        pending = ""
    return result


def arguments(word: str) -> list[str]:
    return [args for name, args in instructions() if name == word]


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, pattern) per line, with Docker's syntax: `*` and `?` within one path
    segment, `**` across segments, `!` re-includes, patterns relative to the context root."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip().lstrip("/"))
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        rules.append((exception, re.compile(regex)))
    return rules


def sent_to_the_build(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker sends `path`: the last rule matching it or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    sent = True
    for exception, pattern in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            sent = exception
    return sent


@pytest.mark.parametrize(
    ("patterns", "path", "sent"),
    [
        # Docker's documented examples.
        ("*/temp*", "somedir/temporary.txt", False),
        ("*/temp*", "temp.txt", True),
        ("*/*/temp*", "somedir/subdir/temporary.txt", False),
        ("temp?", "tempa", False),
        ("temp?", "tempab", True),
        ("**/*.go", "a/b/c.go", False),
        ("**/*.go", "c.go", False),
        ("*.md\n!README*.md\nREADME-secret.md", "README-secret.md", False),
        ("*.md\n!README*.md\nREADME-secret.md", "README.md", True),
        ("*.md\n!README*.md\nREADME-secret.md", "other.md", False),
        # A directory excludes what it holds; an exception re-includes below an excluded root.
        ("*\n!gateway/", "gateway/proxy/handler.py", True),
        ("*\n!gateway/", "tests/conftest.py", False),
        ("*\n!deploy/compose.yaml", "deploy/compose.yaml", True),
        ("*\n!deploy/compose.yaml", "deploy/Dockerfile", False),
    ],
)
def test_dockerignore_matching(patterns: str, path: str, sent: bool) -> None:
    assert sent_to_the_build(path, dockerignore_rules(patterns)) is sent


def context_rules() -> list[tuple[bool, re.Pattern[str]]]:
    ignore = ROOT / ".dockerignore"
    assert ignore.is_file(), "a build would upload .venv, .keygate and .git"
    return dockerignore_rules(ignore.read_text(encoding="utf-8"))


def copy_sources() -> list[str]:
    sources = []
    for args in arguments("COPY"):
        words = args.split()
        if any(w.startswith("--from") for w in words):
            continue
        sources += [posixpath.normpath(w) for w in words[:-1] if not w.startswith("--")]
    return sources


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    rules = context_rules()
    sources = copy_sources()
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file"
        files = (
            [path]
            if path.is_file()
            else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        )
        assert files, source
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert sent_to_the_build(relative, rules), f"{relative} is copied but ignored"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".venv-lowest/bin/python",
        ".keygate/pg/postgresql.conf",
        ".git/HEAD",
        ".env",
        "config/keygate.yaml",
        "tests/conftest.py",
        "gateway/__pycache__/app.cpython-311.pyc",
        ".mypy_cache/3.11/x.json",
        "requirements.lock",
    ],
)
def test_the_build_context_leaves_out(path: str) -> None:
    assert not sent_to_the_build(path, context_rules()), f"{path} would be uploaded"


def test_base_image_is_a_pinned_slim_python() -> None:
    bases = [args.split()[0] for args in arguments("FROM")]
    assert bases
    for base in bases:
        assert pinned(base) and "slim" in base, f"FROM {base}: pin a slim patch release"
        assert base.startswith("python:3.11."), base  # the version the lock was made for


def test_runs_keygate_serve_as_non_root() -> None:
    users = arguments("USER")
    assert users, "the image must set USER"
    assert users[-1] not in ("root", "0") and not users[-1].startswith("0:"), users
    [entrypoint] = arguments("ENTRYPOINT")
    assert "keygate" in entrypoint
    assert "serve" in arguments("CMD")[-1]


def baked_config_source() -> str:
    [env_config] = [
        m.group(1) for args in arguments("ENV") if (m := re.search(r"KEYGATE_CONFIG=(\S+)", args))
    ]
    [source] = [args.split()[0] for args in arguments("COPY") if args.split()[-1] == env_config]
    return source


def test_health_check_probes_the_baked_configs_admin_listener() -> None:
    config = load_config(str(ROOT / baked_config_source()), env={})
    admin_host, admin_port = host_port(config.listen.admin)
    proxy_host, _ = host_port(config.listen.proxy)
    # Inside a container, loopback listeners are unreachable by health checks and scrapes.
    assert admin_host == "0.0.0.0" and proxy_host == "0.0.0.0"
    [healthcheck] = arguments("HEALTHCHECK")
    assert "CMD" in healthcheck and f"127.0.0.1:{admin_port}/healthz" in healthcheck


def test_no_tracked_file_is_gitignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = run(["git", "ls-files", "--cached", "--ignored", "--exclude-standard"])
    assert result.code == 0, result.output
    assert result.output.strip() == "", f"tracked but ignored:\n{result.output}"


def test_local_state_is_gitignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in (".venv/x", ".keygate/x", ".env", "config/keygate.yaml"):
        result = run(["git", "check-ignore", "--no-index", "-q", path])
        assert result.code == 0, f"{path} is not ignored"


def test_helpers_read_this_dockerfile() -> None:
    """The parser sees the instructions the other tests rely on (none silently empty)."""
    words = {word for word, _ in instructions()}
    assert {"FROM", "COPY", "RUN", "USER", "ENV", "HEALTHCHECK", "ENTRYPOINT", "CMD"} <= words
    assert (ROOT / baked_config_source()).is_file()
