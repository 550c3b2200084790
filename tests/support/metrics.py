"""Prometheus scrapes read as numbers: what moved between two scrapes, by labels."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by (sample name, labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


async def scrape(session: aiohttp.ClientSession, admin_url: str) -> Samples:
    async with session.get(admin_url + "/metrics") as response:
        assert response.status == 200, await response.text()
        return parse_metrics(await response.text())


def moved(before: Samples, after: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples named `name` whose value changed, with the change."""
    changes = {}
    for (sample, labels), value in after.items():
        if sample == name:
            delta = value - before.get((sample, labels), 0.0)
            if delta:
                changes[labels] = delta
    return changes


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())
