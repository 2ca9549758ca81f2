"""``tautune status JOB`` and ``tautune jobs``: what a Redis holds, as tables or JSON."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from trials.serialize import decision_to_json
from trials.store import JobStore, Store
from tuner.controllers.auto_lr import method_of_state
from tuner.records import Decision


def job_status(job_store: JobStore, *, decisions: int = 10) -> dict[str, Any]:
    """Everything ``tautune status`` shows, as JSON data."""
    progress = job_store.progress()
    last_step = max((s for _, s in progress.values()), default=-1)
    history = job_store.stage_decisions()
    current = None
    for d in history:
        if d.from_step <= max(last_step, 0) and (d.until_step is None or last_step < d.until_step):
            current = d
    last_reports: dict[int, dict[str, Any]] = {}
    for report in _tail_reports(job_store, 200):
        last_reports[report.rank] = {
            "step": report.step,
            "attempt": report.attempt,
            "metrics": dict(report.metrics),
            "age_s": time.time() - report.ts,
        }
    controller: dict[str, Any] | None = None
    trials: list[dict[str, Any]] = []
    stages: list[list[Decision]] = []  # each trial's stage decisions (a population's)
    for name in ("lr", "composite", "mixture"):
        state = job_store.load_state(name)
        if state is not None:
            controller = summarize_state(state)
            count = _population_size(state)
            stages = [job_store.for_trial(i).stage_decisions() for i in range(count)]
            trials = [_trial_status(job_store.for_trial(i), i, stages[i]) for i in range(count)]
            break
    reports = job_store.report_count()
    shown = [json.loads(decision_to_json(d)) for d in history[-decisions:]]
    if trials:  # a population's reports and decisions are its trials'
        reports = sum(t["reports"] for t in trials)
        last_step = max(t["last_step"] for t in trials)
        shown = sorted(
            (
                {**json.loads(decision_to_json(d)), "trial": i}
                for i in range(len(trials))
                for d in stages[i][-decisions:]
            ),
            key=lambda d: (d["from_step"], d["trial"]),
        )[-decisions * len(trials) :]
        if controller is not None and controller.get("reports_seen") is None:
            controller["reports_seen"] = reports
    return {
        "job": job_store.job,
        "head": job_store.head_info(),
        "workers": job_store.alive_workers(),
        "reports": reports,
        "last_step": last_step,
        "version": job_store.version(),
        "horizon": job_store.horizon(),
        "current": json.loads(decision_to_json(current)) if current else None,
        "decisions": shown,
        "last_reports": last_reports,
        "controller": controller,
        "trials": trials,
        "warning": job_store.meta().get("warning"),
    }


def _trial_count(job_store: JobStore) -> int:
    """The trials of a population job (0 for any other job)."""
    state = job_store.load_state("lr")
    return 0 if state is None else _population_size(state)


def _population_size(state: dict[str, Any]) -> int:
    """How many trials the population controller that wrote ``state`` decides for (0: it
    is not a population's)."""
    if "trial_state" in state:
        return len(state["trial_state"])
    if "given" in state and isinstance(state.get("trials"), int):
        return int(state["trials"])
    return 0


def _trial_status(trial: JobStore, index: int, stages: list[Decision]) -> dict[str, Any]:
    """One trial of a population job: its progress and the decision it trains under."""
    progress = trial.progress()
    last_step = max((s for _, s in progress.values()), default=-1)
    current = None
    for d in stages:
        if d.from_step <= max(last_step, 0) and (d.until_step is None or last_step < d.until_step):
            current = d
    return {
        "trial": index,
        "reports": trial.report_count(),
        "last_step": last_step,
        "workers_alive": len(trial.alive_workers()),
        "version": trial.version(),
        "current": json.loads(decision_to_json(current)) if current else None,
    }


def summarize_state(state: dict[str, Any]) -> dict[str, Any]:
    """A few numbers from a stored controller state, whichever controller wrote it."""
    if "parts" in state:  # a composite: LR and mixture
        out = summarize_state(state["parts"]["lr"])
        mixture = state["parts"]["mixture"]
        out["mixture_method"] = mixture.get("config", {}).get("method", mixture.get("algorithm"))
        return out
    if "choice" in state and "inner" in state:  # auto: the method it picked
        if not isinstance(state["inner"], dict):
            return {"method": "auto", "center_lr": None, "reports_seen": 0, "finished": False}
        out = summarize_state(state["inner"])
        out["method"] = f"auto: {out['method']}"
        return out
    reports = state.get("reports_seen")
    if reports is None and "trial_state" in state:
        reports = sum(t.get("reports", 0) for t in state["trial_state"])
    return {
        "method": _method_of(state),
        "center_lr": math.exp(state["mu"]) if "mu" in state else _lr_of(state),
        "step_factor": math.exp(state["delta"]) if "delta" in state else None,
        "reports_seen": reports,
        "finished": state.get("finished"),
        "restarts": _restarts_of(state),
    }


def _restarts_of(state: dict[str, Any]) -> int:
    """Rank restarts and missed restores the controller saw (tuner.controllers.restarts)."""
    watches = state.get("restarts")
    if isinstance(watches, dict):
        watches = [watches]
    if not isinstance(watches, list):
        return 0
    return sum(int(w.get("count", 0)) for w in watches if isinstance(w, dict))


def _lr_of(state: dict[str, Any]) -> float | None:
    result = state.get("result")  # population explore: the stage's commit
    if isinstance(result, dict):
        return result.get("lr")
    return state.get("lr_now")


def _method_of(state: dict[str, Any]) -> str:
    """Which controller wrote ``state`` (their states differ in their keys)."""
    if "trial_state" in state:
        return "population"
    if "given" in state and "rounds" in state:
        return "population explore"
    if "mu" in state:
        return str(state.get("config", {}).get("method", "stagewise"))
    return method_of_state(state) or str(state.get("algorithm", "mixture"))


def _tail_reports(job_store: JobStore, count: int) -> list[Any]:
    from trials.serialize import report_from_entry
    from tuner.errors import MalformedEntryError

    stream = job_store.keys.reports
    entries = job_store.store.call(lambda c: c.xrevrange(stream, count=count))
    out = []
    for raw_id, fields in reversed(entries):
        try:
            out.append(report_from_entry(stream, raw_id.decode(), fields))
        except MalformedEntryError:
            continue
    return out


def _lr(value: float | None) -> str:
    return f"{value:.3g}" if value is not None else "base"


def print_status(status: dict[str, Any], console: Console) -> None:
    head = status["head"]
    head_text = f"alive (pid {head['pid']} on {head['host']})" if head else "not attached"
    console.print(
        f"[bold]job {status['job']}[/]: head {head_text}; {len(status['workers'])} "
        f"worker(s) alive; {status['reports']} reports, last step {status['last_step']}"
    )
    if status.get("warning"):
        console.print(f"[yellow]warning: {status['warning']}[/]")
    cur = status["current"]
    if cur:
        console.print(
            f"now: stage {cur['stage']} ({cur['kind']}), lr {_lr(cur['lr'])}"
            + (f", weights {cur['mixture']}" if cur.get("mixture") else "")
        )
    if status["controller"]:
        c = status["controller"]
        probe = f", probe x{c['step_factor']:.2f}" if c.get("step_factor") else ""
        mixture = f", mixture by {c['mixture_method']}" if c.get("mixture_method") else ""
        restarts = c.get("restarts") or 0
        seen = f", {c['reports_seen']} reports seen" if c.get("reports_seen") is not None else ""
        console.print(
            f"controller {c['method']}: center lr {_lr(c['center_lr'])}{probe}{mixture}{seen}"
            + (f", {restarts} restart(s) or missed restore(s) seen" if restarts else "")
            + (", finished" if c["finished"] else "")
        )
    population = bool(status.get("trials"))
    table = Table(title="Decisions (newest last)")
    for col in ("trial",) * population + ("version", "stage", "kind", "steps", "lr"):
        table.add_column(col)
    for col in ("mixture", "phase"):
        table.add_column(col)
    for d in status["decisions"]:
        end = d["until_step"] if d["until_step"] is not None else "…"
        lr = _lr(d["lr"]) + (f" → {_lr(d['lr_end'])}" if d["lr_end"] is not None else "")
        seg = d["info"].get("segment")
        phase = (seg.get("role") if isinstance(seg, dict) else None) or d["info"].get("phase", "")
        table.add_row(
            *((str(d["trial"]),) if population else ()),
            str(d["version"]),
            str(d["stage"]),
            d["kind"],
            f"{d['from_step']}–{end}",
            lr,
            " ".join(f"{a}={w:.2f}" for a, w in (d["mixture"] or {}).items()) or "-",
            str(phase),
        )
    console.print(table)
    if population:  # its workers are the trials' (below)
        _print_trials(status["trials"], console)
        return
    workers = Table(title="Workers")
    for col in ("rank", "alive", "last step", "metrics"):
        workers.add_column(col)
    for rank, rep in sorted(status["last_reports"].items()):
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(rep["metrics"].items()))
        workers.add_row(
            str(rank), "yes" if rank in status["workers"] else "no", str(rep["step"]), metrics
        )
    console.print(workers)


def _print_trials(rows: list[dict[str, Any]], console: Console) -> None:
    trials = Table(title="Trials")
    for col in ("trial", "reports", "last step", "workers alive", "now"):
        trials.add_column(col)
    for t in rows:
        cur = t["current"]
        now = "-"
        if cur:
            role = cur["info"].get("segment", {}).get("role") or cur["info"].get("phase", "")
            role = "" if role == cur["kind"] else f" ({role})"
            now = f"{cur['kind']}{role} at lr {_lr(cur['lr'])}"
        trials.add_row(
            str(t["trial"]), str(t["reports"]), str(t["last_step"]), str(t["workers_alive"]), now
        )
    console.print(trials)


def status(
    job: str, redis_url: str, *, as_json: bool = False, console: Console | None = None
) -> int:
    console = console or Console()
    data = job_status(Store.connect(redis_url).job(job).require())
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print_status(data, console)
    return 0


def jobs(redis_url: str, *, as_json: bool = False, console: Console | None = None) -> int:
    console = console or Console()
    store = Store.connect(redis_url)
    rows = []
    for name in store.jobs():
        js = store.job(name)
        parts = [js.for_trial(i) for i in range(_trial_count(js))] or [js]
        rows.append(
            {
                "job": name,
                "reports": sum(p.report_count() for p in parts),
                "decisions": sum(p.version() for p in parts),
                "head_alive": js.head_alive(),
                "workers_alive": sum(len(p.alive_workers()) for p in parts),
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"{len(rows)} job(s)")
    for col in ("job", "reports", "decisions", "head", "workers alive"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["job"]),
            str(r["reports"]),
            str(r["decisions"]),
            "alive" if r["head_alive"] else "-",
            str(r["workers_alive"]),
        )
    console.print(table)
    return 0
