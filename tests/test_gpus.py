"""Tests for lmscaling.gpus: each job gets its own GPUs through lock files."""

import importlib.util
import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, TINY_CONFIG, run_snakemake

from lmscaling.gpus import ENV, GPUClaimError, claim_gpus, main, visible_gpus


def test_visible_gpus_reads_cuda_visible_devices():
    assert visible_gpus({ENV: "2, 5"}) == ["2", "5"]
    assert visible_gpus({ENV: ""}) == []


def test_two_jobs_get_different_gpus_and_env_is_restored(tmp_path):
    env = {ENV: "0,1"}
    with claim_gpus(1, tmp_path, environ=env) as first:
        assert first == ["0"] and env[ENV] == "0"
        other = {ENV: "0,1"}
        with claim_gpus(1, tmp_path, environ=other) as second:
            assert second == ["1"] and other[ENV] == "1"
    assert env[ENV] == "0,1"


def test_released_gpu_is_claimed_again(tmp_path):
    with claim_gpus(1, tmp_path, devices=["3"], environ={}) as got:
        assert got == ["3"]
    env = {}
    with claim_gpus(1, tmp_path, devices=["3"], environ=env) as got:
        assert got == ["3"] and env[ENV] == "3"
    assert ENV not in env


def test_multi_gpu_claim_and_timeout_when_taken(tmp_path):
    with claim_gpus(2, tmp_path, devices=["0", "1", "2"], environ={}) as got:
        assert got == ["0", "1"]
        with pytest.raises(GPUClaimError, match="only 1 of 2"):
            with claim_gpus(2, tmp_path, devices=["0", "1", "2"], environ={}, timeout_s=0):
                pass


def test_too_many_gpus_is_an_error(tmp_path):
    with pytest.raises(GPUClaimError, match="needs 3 GPU"):
        with claim_gpus(3, tmp_path, devices=["0"], environ={}):
            pass


def test_machine_without_gpus_claims_nothing(tmp_path):
    env = {ENV: ""}
    with claim_gpus(1, tmp_path / "locks", environ=env) as got:
        assert got == [] and env[ENV] == ""
    assert not (tmp_path / "locks").exists()


def test_zero_gpus_and_slurm_claim_nothing(tmp_path):
    env = {ENV: "0"}
    with claim_gpus(0, tmp_path, environ=env) as got:
        assert got == [] and env[ENV] == "0"
    slurm = {ENV: "4", "SLURM_JOB_ID": "17"}
    with claim_gpus(1, tmp_path, environ=slurm) as got:
        assert got == ["4"]
    assert list(tmp_path.iterdir()) == []


def test_lock_held_by_another_process(tmp_path):
    code = (
        "import sys, time\n"
        "from lmscaling.gpus import claim_gpus\n"
        f"with claim_gpus(1, {str(tmp_path)!r}, devices=['0', '1'], environ={{}}):\n"
        "    print('held', flush=True); sys.stdin.readline()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with claim_gpus(1, tmp_path, devices=["0", "1"], environ={}) as got:
            assert got == ["1"]
    finally:
        holder.communicate("\n", timeout=30)
    with claim_gpus(1, tmp_path, devices=["0", "1"], environ={}) as got:
        assert got == ["0"]


def test_command_line_runs_the_command_on_claimed_gpus(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(ENV, "6,7")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    code = "import os; print('seen', os.environ['CUDA_VISIBLE_DEVICES'])"
    rc = main(["--count", "2", "--lock-dir", str(tmp_path), "--", sys.executable, "-c", code])
    assert rc == 0
    assert "seen 6,7" in capfd.readouterr().out


def test_gpus_counted_with_nvidia_smi_without_cuda_init(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    listing = "GPU 0: NVIDIA H100 (UUID: GPU-a)\nGPU 1: NVIDIA H100 (UUID: GPU-b)"
    fake.write_text(f"#!/bin/sh\necho '{listing}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert visible_gpus({}) == ["0", "1"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert visible_gpus({}) == []


def _planned_gpus(log: str, rule: str) -> set[int]:
    """The ``gpu`` resource of every planned job of ``rule`` in a dry run's log."""
    blocks = re.findall(rf"^rule {rule}:\n((?:    .*\n)+)", log, re.M)
    return {int(m) for b in blocks for m in re.findall(r"resources: .*\bgpu=(\d+)", b)}


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_train_gpus_reaches_the_jobs_through_each_profile(tmp_path, profile):
    """train.gpus is the GPU count of every training job under the shipped profiles (a profile
    line `gpu:` would silently override it); a run limit below it is warned about."""
    if profile == "slurm" and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (lmscaling[slurm])")
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["train"].update(device="auto", gpus=4)
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["-n", "--workflow-profile", str(REPO / "profiles" / profile)]
    if profile == "local":  # its `resources: gpu: 1` lets one GPU be in use at once
        capped = run_snakemake(tmp_path / "run", *args, config=path)
        assert _planned_gpus(capped.stdout, "train_model") == {1}
        assert "train.gpus is 4, but this run lets only 1 GPU(s)" in capped.stdout + capped.stderr
        args += ["--resources", "gpu=4"]
    proc = run_snakemake(tmp_path / "run", *args, config=path)
    assert _planned_gpus(proc.stdout, "train_model") == {4}
    assert _planned_gpus(proc.stdout, "evaluate") == {1}
    assert "train.gpus is 4" not in proc.stdout + proc.stderr
