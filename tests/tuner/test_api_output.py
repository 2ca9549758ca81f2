"""What ``tune()`` prints: the workers' output and the head's decisions reach the caller's
console when it starts the Ray itself (as Ray Train's workers' output does)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    from tuner import LRSpec, tune

    def train_fn(config):
        from workers.agent import Agent
        agent = Agent.attach()
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = agent.lr_scheduler(opt, total_steps=300, model=model)
        print(f"hello from rank {agent.rank}", flush=True)
        for step in range(300):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            opt.zero_grad(); loss.backward(); opt.step()
            agent.report(step, loss=loss.item()); sched.step()
            time.sleep(0.002)
        agent.close()

    quiet = sys.argv[1] == "quiet"
    result = tune(train_fn, num_workers=1, lr=LRSpec(init_lr=0.1, total_steps=300),
                  log_to_driver=not quiet)
    time.sleep(1)  # Ray forwards the workers' lines from a thread
    print(f"decisions {len(result.decisions)}", flush=True)
    """
)


@pytest.mark.parametrize("mode", ["loud", "quiet"])
def test_the_workers_output_and_the_heads_decisions_reach_the_console(
    tmp_path: Path, mode: str
) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "decisions " in done.stdout
    shown = ["hello from rank 0" in out, "stage 0 explore steps" in out]
    assert shown == ([True, True] if mode == "loud" else [False, False]), out[-3000:]


def test_a_gpu_asked_of_a_machine_without_one_is_an_error_at_once(tmp_path: Path) -> None:
    # tune() starts the Ray itself here, so nothing can add a GPU: it says so instead of
    # waiting forever for the worker to be scheduled.
    script = tmp_path / "gpu.py"
    script.write_text(
        "from tuner import tune\n"
        "from tuner.errors import ConfigError\n"
        "try:\n"
        "    tune(lambda config: None, num_workers=2, resources_per_worker={'GPU': 1})\n"
        "except ConfigError as e:\n"
        "    print('refused:', e)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "refused: each worker asks for {'GPU': 1.0, 'CPU': 1.0}" in done.stdout
    assert re.search(r"more \['GPU'\] than this Ray cluster has \(CPU \d+, GPU 0\)", done.stdout)
