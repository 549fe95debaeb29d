"""Reading `EXPLAIN` output: which tables a PostgreSQL plan reads whole."""

from __future__ import annotations

from collections.abc import Iterable


def postgres_full_reads(plan: list[str], tables: Iterable[str]) -> list[str]:
    """Plan lines reading one of `tables` without an index condition.

    Meant for plans made with sequential scans off: a missing index then shows as a walk
    over a whole index (no `Cond:` beneath it) as often as a `Seq Scan`; both are full
    reads. A write node (`Update on …`) reads nothing itself: its scan is planned below.
    """
    watched = tuple(tables)
    full = []
    for at, line in enumerate(plan):
        if not any(f" on {table} " in line + " " for table in watched):
            continue
        if line.strip().startswith(("Update on", "Delete on", "Insert on")):
            continue
        depth = len(line) - len(line.lstrip())
        details = []
        for below in plan[at + 1 :]:
            if "->" in below or len(below) - len(below.lstrip()) <= depth:
                break
            details.append(below)
        if "Seq Scan" in line or not any("Cond:" in detail for detail in details):
            full.append(line)
    return full
