"""deploy/'s manifests parse and wire tautune the way the code expects."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from tuner.launch import main as launch_main
from tuner.specs import parse_lr_spec

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_kuberay_manifest_runs_the_launch_wrapper_against_a_durable_redis() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "kuberay.yaml").read_text())}
    assert set(docs) == {"Deployment", "PersistentVolumeClaim", "Service", "RayJob"}
    redis_args = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis_args[redis_args.index("--appendonly") + 1] == "yes"
    assert "default off" in redis_args  # only the ACL user gets in
    job = docs["RayJob"]["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:3] == ["python", "-m", "tuner.launch"]
    lr = argv[argv.index("--lr") + 1]
    parse_lr_spec(lr)  # the spec in the manifest is one tautune accepts
    assert "TAUTUNE_JOB" in yaml.safe_load(job["runtimeEnvYAML"])["env_vars"]
    head_env = job["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert {e["name"] for e in head_env} >= {"TAUTUNE_REDIS_URL", "RAY_AUTH_MODE"}


def test_cluster_launcher_config_keeps_token_auth_on() -> None:
    cfg = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    assert cfg["provider"]["type"] == "local"
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)


def test_redis_conf_is_durable_and_locked_down() -> None:
    conf = (DEPLOY / "redis.conf").read_text().splitlines()
    settings = [line.split(None, 1) for line in conf if line and not line.startswith("#")]
    values = {k: v for k, v in settings}
    assert values["appendonly"] == "yes" and values["port"] == "0" and "tls-port" in values
    assert "user default off" in conf and values["maxmemory-policy"] == "noeviction"


def test_launch_refuses_to_run_without_a_command(capsys: object) -> None:
    import pytest

    with pytest.raises(SystemExit):
        launch_main(["--job", "x", "--redis", "redis://127.0.0.1:1/0"])
