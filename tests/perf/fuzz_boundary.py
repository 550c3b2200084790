"""The differential test of the boundary, run for longer than `make test` allows.

    .venv/bin/python tests/perf/fuzz_boundary.py [--examples 2000] [--seed N]

Starts its own embedded PostgreSQL and Redis, a gateway and the recording upstream, and
runs tests/integration/boundary/test_differential.py's property for `--examples`
pipelines (the test suite runs about 50). Exits 1 with the shrunk counterexample, every
broken invariant and the client bytes that reproduce it; 0 when the boundary held.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from tests.integration.boundary.recorded import Recorded, recorded_gateway  # noqa: E402
from tests.integration.boundary.test_differential import (  # noqa: E402
    Request,
    check_pipeline,
    pipelines,
)
from tests.support.stores import start_stores  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    with (
        start_stores() as stores,
        recorded_gateway(
            stores, Path(tempfile.mkdtemp(prefix="fuzz-boundary-")), name="fuzz"
        ) as rec,
    ):
        print(f"gateway logs: {rec.gateway.process.stdout_path.parent}", flush=True)
        started = time.monotonic()
        run = _property(rec, args.examples)
        if args.seed is not None:
            run = seed(args.seed)(run)
        try:
            run()
        except AssertionError as exc:
            print(f"FAILED after {time.monotonic() - started:.0f}s:\n{exc}", file=sys.stderr)
            return 1
        print(f"{args.examples} pipelines, boundary held ({time.monotonic() - started:.0f}s)")
    return 0


def _property(rec: Recorded, examples: int):  # type: ignore[no-untyped-def]
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(pipeline=pipelines())
    def run(pipeline: list[Request]) -> None:
        check_pipeline(rec, pipeline)

    return run


if __name__ == "__main__":
    sys.exit(main())
