"""Where the CPU of one profiled run goes that another's does not: per native function, in
microseconds per request (`bench_keys.py --profile DIR --perf` writes the inputs).

    .venv/bin/python tests/perf/perf_diff.py DIR/1keys-1w-<pid>.txt.perf \\
        DIR/100000keys-1w-<pid>.txt.perf [--top 30]

Each profile's samples (software clock at 1,999 Hz) are divided by the requests of its
measured run (the `.txt.requests` file beside its `.txt.perf`), so a function's figure is
the CPU time it took per request; the table lists the largest differences. A Python
function shows up as the interpreter's C functions (`_PyEval_EvalFrameDefault`, dict
lookups, allocation): `perf` cannot name Python frames of Python 3.11. Needs `perf`
(Debian linux-perf).
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

RATE = 1999  # bench_keys.py's perf record -F
_LINE = re.compile(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[.\]\s+(\S+)")


def per_request(profile: Path) -> dict[str, float]:
    """Microseconds per request by `library function`."""
    requests = float(Path(f"{profile.with_suffix('')}.requests").read_text())
    report = subprocess.run(
        [
            *("perf", "report", "-i", str(profile), "--no-children", "-g", "none", "-n"),
            *("--sort", "dso,symbol", "--stdio"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out: dict[str, float] = {}
    for line in report.splitlines():
        m = _LINE.match(line)
        if m:
            name = f"{Path(m.group(2)).name} {m.group(3)}"
            out[name] = out.get(name, 0.0) + int(m.group(1)) / requests / RATE * 1e6
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", type=Path)
    p.add_argument("other", type=Path)
    p.add_argument("--top", type=int, default=30)
    a = p.parse_args()
    base, other = per_request(a.base), per_request(a.other)
    print(f"CPU per request: {sum(base.values()):.1f} us -> {sum(other.values()):.1f} us\n")
    print("| function | base us/req | other us/req | difference |")
    print("|---|--:|--:|--:|")
    names = sorted(set(base) | set(other), key=lambda k: base.get(k, 0.0) - other.get(k, 0.0))
    for name in names[: a.top]:
        b, o = base.get(name, 0.0), other.get(name, 0.0)
        print(f"| `{name}` | {b:.2f} | {o:.2f} | {o - b:+.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
