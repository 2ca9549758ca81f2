"""Population jobs from the command line: the job driver ``tautune submit`` runs
(``python -m tuner.launch --population P``) and ``tautune attach --population P``, with real
trial processes, a real Ray and a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trials.embedded import EmbeddedRedis
from trials.store import Store
from tuner import launch
from tuner.errors import ConfigError
from workers.agent import TRIAL_ENV

pytestmark = pytest.mark.slow

RESTARTABLE = """
import os, sys, time, torch
from workers.agent import Agent

steps, pause, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
crash = int(os.environ.get("CRASH_INTO_PROBE", "-1"))  # steps into the stage's first probe
trial = int(os.environ["TAUTUNE_TRIAL"])
ckpt = os.path.join(out, f"trial{trial}.pt")
torch.manual_seed(0)
x = torch.randn(256, 16)
y = x @ torch.randn(16, 1)
torch.manual_seed(trial)
model = torch.nn.Linear(16, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
gen = torch.Generator().manual_seed(100 + trial)
first = 0
if os.path.exists(ckpt):  # resumed: the process died; back to its last checkpoint
    state = torch.load(ckpt)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    gen.set_state(state["gen"])
    first = state["step"]
agent = Agent.attach(flush_every=4, flush_interval_s=0.02)
sched = agent.lr_scheduler(
    opt, model=model, extra_state={"batches": gen}, last_epoch=first - 1
)
for step in range(first, steps):
    d = agent.decision(step)
    role = d.info.get("segment", {}).get("role") if d is not None else None
    if crash >= 0 and role == "probe" and step == d.from_step + crash:
        os._exit(3)  # dies: no flush, no checkpoint of this step
    if step % 10 == 0:
        torch.save(
            {"model": model.state_dict(), "opt": opt.state_dict(),
             "gen": gen.get_state(), "step": step},
            ckpt,
        )
    idx = torch.randint(0, 256, (32,), generator=gen)
    loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    agent.report(step, loss=loss.item())
    sched.step()
    time.sleep(pause)
agent.close()
torch.save([p.detach() for p in model.parameters()], ckpt + ".final")
print(f"trial {os.environ.get('TAUTUNE_TRIAL')} done")
"""


SPEC = {"method": "explore", "init_lr": 0.02, "total_steps": 300, "warmup_steps": 10}


def _script(tmp_path: Path) -> str:
    path = tmp_path / "trial.py"
    path.write_text(RESTARTABLE)
    return str(path)


def _explored_together(store: Store, job: str, trials: int) -> None:
    """Every trial reported every step, started the stage from trial 0's state and ended
    on the winner's."""
    for t in range(trials):
        trial = store.job(job, t)
        assert trial.report_count() == SPEC["total_steps"]
        decisions = trial.stage_decisions()
        probe = next(d for d in decisions if d.info["segment"]["role"] == "probe")
        assert probe.publish if t == 0 else probe.restore_peer == 0
        assert decisions[-1].info["segment"]["role"] == "commit"
        assert decisions[-1].until_step == SPEC["total_steps"]


def test_the_job_driver_runs_one_process_per_trial_under_one_head(
    ray_local: None,
    redis_server: EmbeddedRedis,
    store: Store,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    argv = ["--job", "cli-pop", "--redis", redis_server.url, "--lr", json.dumps(SPEC)]
    argv += ["--population", "2", "--", sys.executable, _script(tmp_path), "300", "0.02"]
    argv += [str(tmp_path)]
    assert launch.main(argv) == 0
    _explored_together(store, "cli-pop", 2)
    out = capfd.readouterr().out  # each trial's lines behind its number
    for t in (0, 1):
        assert f"[trial {t}] trial {t} done" in out, out[-2000:]


def test_attach_with_a_population_decides_for_trials_already_running(
    redis_server: EmbeddedRedis, store: Store, tmp_path: Path
) -> None:
    job = "attach-pop"
    env = {**os.environ, "TAUTUNE_JOB": job, "TAUTUNE_REDIS_URL": redis_server.url}
    script = _script(tmp_path)
    # the trials start first and train on their base schedule until the head comes
    trials = [
        subprocess.Popen(
            [sys.executable, script, "300", "0.06", str(tmp_path)], env={**env, TRIAL_ENV: str(t)}
        )
        for t in range(2)
    ]
    attach = ["attach", job, "--lr", json.dumps(SPEC), "--population", "2"]
    head = subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", *attach],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for t in trials:
            assert t.wait(timeout=300) == 0
        detach = subprocess.run(
            [sys.executable, "-m", "tuner.cli", "detach", job],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert detach.returncode == 0, detach.stdout + detach.stderr
        out, _ = head.communicate(timeout=60)
    finally:
        head.kill()
    assert head.returncode == 0, out
    assert "trial 0 v1 stage 0 explore" in out and "trial 1 v1 stage 0 explore" in out
    _explored_together(store, job, 2)


def test_a_population_needs_an_lr_spec_and_no_mixture(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        launch.main(["--job", "j", "--redis", "unix:///x", "--population", "2", "--", "true"])
    from tuner.commands.submit import check_population

    with pytest.raises(ConfigError, match="give --lr"):
        check_population(None, 2)
    with pytest.raises(ConfigError, match="at least 2 trials"):
        check_population(dict(SPEC), 1)
    both = ["--lr", "init_lr=0.1", "--mixture", "method=ducb,arms=a/b", "--population", "2"]
    cli = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "attach", "j", *both, "--redis", "unix:///x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode != 0 and "population tunes the LR only" in cli.stdout + cli.stderr


def test_a_trial_that_dies_mid_stage_resumes_and_ends_on_the_winners_weights(
    ray_local: None, redis_server: EmbeddedRedis, store: Store, tmp_path: Path
) -> None:
    import torch

    from tuner.head import start_head, stop_head

    job, trials, steps = "pop-restart", 3, 300
    start_head(job, redis_server.url, SPEC, trials=trials)
    assert store.job(job).wait_for_head(120)
    script = _script(tmp_path)
    env = {**os.environ, "TAUTUNE_JOB": job, "TAUTUNE_REDIS_URL": redis_server.url}

    def start(t: int, crash: bool = False) -> subprocess.Popen[bytes]:
        extra = {TRIAL_ENV: str(t), **({"CRASH_INTO_PROBE": "4"} if crash else {})}
        return subprocess.Popen(
            [sys.executable, script, str(steps), "0.03", str(tmp_path)], env={**env, **extra}
        )

    procs = [start(t, crash=t == 1) for t in range(trials)]
    assert procs[1].wait(timeout=300) == 3  # trial 1 died 4 steps into its probe
    procs[1] = start(1)  # and comes back from its last checkpoint
    for p in procs:
        assert p.wait(timeout=300) == 0
    final = stop_head(job)
    assert final is not None and final["error"] is None
    summary = final["controller"]
    assert summary["unscored"] == [1] and summary["winner"] is not None
    assert summary["scores"][1] is None
    resumed = store.job(job, 1)
    assert max(a for a, _ in resumed.progress().values()) == 1  # it reported as attempt 1
    commits = [store.job(job, t).stage_decisions()[-1] for t in range(trials)]
    _, win = commits[0].info["segment"]["winner"]
    assert win != 1 and commits[1].restore_peer == win
    weights = [torch.load(tmp_path / f"trial{t}.pt.final") for t in range(trials)]
    for w in weights[1:]:  # every trial, the restarted one too, ends on the same weights
        assert all(torch.equal(a, b) for a, b in zip(w, weights[0], strict=True))
