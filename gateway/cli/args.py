"""Argument types and the options every command accepts."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from gateway.units import parse_duration


def duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def datetime_arg(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time such as 2030-01-31T00:00:00Z"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. a trailing Z for UTC")
    return value


def json_object_arg(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError("--metadata must be a JSON object") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--metadata must be a JSON object")
    return value


def rate_limit_arg(text: str | None) -> str | None:
    """--rate-limit as the service takes it ("none": no limit); the service checks it."""
    return None if text is None or text.strip().lower() == "none" else text


def common_options(default: Any) -> argparse.ArgumentParser:
    """--config and --json, accepted before and after the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=default,
        metavar="PATH",
        help="config file (default: --config, else $KEYGATE_CONFIG, else config/keygate.yaml "
        "if present, else a running `keygate dev` started in this folder)",
    )
    common.add_argument(
        "--json", action="store_true", default=default, help="print machine-readable JSON"
    )
    return common
