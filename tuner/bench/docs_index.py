"""docs/benchmarks.md: the LR tables, then links to every other benchmark page beside it.

Every suite that writes a page calls :func:`refresh_index`, so ``docs/benchmarks.md`` is
regenerated from the JSON files in the folder whichever suite ran last.
"""

from __future__ import annotations

from pathlib import Path

LR_TASKS = ("nqm", "charlm", "digits")
LR_COMMAND = "tautune bench lr --out docs --jobs 2"
OTHER_PAGES = (
    (
        "benchmarks-held-out.md",
        "Held-out LR tasks: tautune on training it was not designed on",
        "tautune bench held-out --out docs --jobs 2",
    ),
    (
        "benchmarks-peers.md",
        "Peers: PBT, PB2, schedule-free and Prodigy beside tautune",
        "tautune bench peers --json docs/bench-peers.json --jobs 2 --docs docs/benchmarks-peers.md",
    ),
    (
        "benchmarks-control-plane.md",
        "Control plane: agent overhead, stalls, latency, scale, BO cost",
        "tautune bench control-plane --json docs/bench-control-plane.json "
        "--plot docs/bench-control-plane.png --docs docs/benchmarks-control-plane.md",
    ),
    (
        "benchmarks-population.md",
        "Population exploration: one candidate per trial, every trial on from the winner's",
        "tautune bench population --json docs/bench-population.json "
        "--docs docs/benchmarks-population.md --trials 3,5 --jobs 2",
    ),
    (
        "benchmarks-accel.md",
        "On a GPU: step overhead with the agent, snapshot and state-exchange times",
        "python -m tuner.bench.accel_cli --page docs/bench-accel.json "
        "docs/bench-accel-large.json docs/bench-accel-snapshots.json",
    ),
    (
        "benchmarks-mixture.md",
        "Data mixture and curriculum bandits",
        "",
    ),
)


def other_pages_section(folder: Path, but: str = "") -> list[str]:
    """Markdown lines linking the other benchmark pages that exist in ``folder``, except
    the page named ``but`` (the one being written)."""
    lines = ["## Other benchmark pages", ""]
    found = False
    for name, title, command in OTHER_PAGES:
        if name != but and (folder / name).exists():
            how = f", written by `{command}`" if command else " (its commands are on the page)"
            lines.append(f"- [{title}]({name}){how}.")
            found = True
    return [*lines, ""] if found else []


def refresh_index(folder: Path) -> Path | None:
    """Rewrite ``folder/benchmarks.md`` from the LR JSON files there (None if there are none)."""
    from tuner.bench.lr_docs import load_docs, write_docs

    paths = [folder / f"bench-{task}.json" for task in LR_TASKS]
    present = [p for p in paths if p.exists()]
    if not present:
        return None
    written = write_docs(load_docs(present), folder / "benchmarks.md", folder, LR_COMMAND)
    return written[0]
