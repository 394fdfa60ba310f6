"""Shared by both test tiers (the repository root is on ``sys.path`` through pytest.ini's
``pythonpath``): the shipped example photos and the ``slow`` marker. ``tests/unit`` runs offline; ``tests/integration`` reads ``../shared``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXAMPLES = ROOT / "examples" / "images"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, skipped unless asked for (-m slow or PIFR_SLOW=1)")


def pytest_collection_modifyitems(config, items):
    """Keep the default run (the README's command, CI) short: slow tests run only when a marker
    expression is given (``-m slow``) or ``PIFR_SLOW=1`` is set."""
    if config.getoption("markexpr") or os.environ.get("PIFR_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or PIFR_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def write_concurrently(stores, writers: int, per_writer: int, templates) -> None:
    """``writers`` threads, each adding ``per_writer`` subjects (``p<k>-<i>``, with
    ``templates(k, i)``) through ``stores[k % len(stores)]``; raises the first error any thread met."""
    import threading

    errors = []

    def writer(k):
        try:
            for i in range(per_writer):
                stores[k % len(stores)].add_templates(f"p{k}-{i}", templates(k, i))
        except Exception as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    if errors:
        raise errors[0]
