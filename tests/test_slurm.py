"""The tiny experiment on a real SLURM scheduler, through the user's profile.

tests/slurm/setup_slurm.sh installs (where needed) and starts a single-node SLURM cluster
(munged, slurmctld, slurmd on localhost); the workflow then runs with
``--workflow-profile profiles/slurm`` unchanged plus the test-only overlay
``--profile tests/slurm/profile`` (squeue for job states: the cluster has no accounting). The
test asserts that every job except the local rules went through sbatch, that SLURM ran each one
to completion on the partition and with the CPUs of the profile (its job completion log), and
that the fit came out.

Skips where SLURM is not installed (``tests/slurm/setup_slurm.sh install`` installs it, as
``.ci/run`` does), where the test does not run as root, or where the executor plugin is missing
(pip install 'lmscaling[slurm]'). Takes 5 to 7 minutes on two cores: every job starts Snakemake
again inside its allocation, and the plugin polls squeue at growing intervals.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "tests" / "slurm" / "setup_slurm.sh"
LOCK = Path(tempfile.gettempdir()) / "lmscaling-slurm-test.lock"
LOCK_WAIT_S = 1800
LOCAL_RULES = {"all", "collect_points", "fit_scaling_law"}
GPU_RULES = {"train_model", "evaluate"}


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """Start the single-node cluster; yield its state directory; stop it afterwards."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (lmscaling[slurm])")
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root")
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)}): {SETUP.name} install")
    # One cluster per machine (fixed ports, /etc/slurm): concurrent test runs take turns.
    with open(LOCK, "a") as lock:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip(f"another test run has held the SLURM cluster ({LOCK}) too long")
                time.sleep(5)
        state = tmp_path_factory.mktemp("slurm")
        try:
            proc = subprocess.run(
                ["bash", str(SETUP), "start", str(state)],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if proc.returncode == 3:
                pytest.skip(f"no SLURM here: {proc.stderr.strip()}")
            assert proc.returncode == 0, proc.stderr
            yield state
        finally:
            subprocess.run(["bash", str(SETUP), "stop", str(state)], timeout=120, check=False)


def jobs_in_log(text: str) -> dict[str, str]:
    """{Snakemake job id: "rule NAME" or "localrule NAME"} from a Snakemake log."""
    jobs = {}
    for m in re.finditer(r"^(localrule|rule) (\w+):\n(?:    .*\n)*?    jobid: (\d+)", text, re.M):
        jobs[m[3]] = f"{m[1]} {m[2]}"
    return jobs


def test_tiny_workflow_runs_through_sbatch(slurm_cluster, tmp_path):
    workdir = tmp_path / "run"
    # train.device auto, as on a GPU cluster: the GPU rules ask for the GPUs of the config
    # (train.gpus for training, 1 for evaluation); a node without CUDA then trains on its CPUs.
    config = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    config["train"]["device"] = "auto"
    config_path = tmp_path / "tiny-auto.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MLFLOW_"))}
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config_path),
        "--profile",
        str(REPO / "tests" / "slurm" / "profile"),
        "--workflow-profile",
        str(REPO / "profiles" / "slurm"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500, cwd=REPO)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]

    jobs = jobs_in_log(log)
    submitted = dict(re.findall(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", log, re.M))
    local = {j for j, kind in jobs.items() if kind.startswith("localrule")}
    remote = {j for j, kind in jobs.items() if kind.startswith("rule ")}
    # Every job but the local rules went through sbatch, once.
    assert {jobs[j].split()[1] for j in local} == LOCAL_RULES
    assert set(submitted) == remote and remote
    assert len(set(submitted.values())) == len(submitted)
    rules = {jobs[j].split()[1] for j in remote}
    assert {"prepare_corpus", "train_tokenizer", "tokenize", "train_model", "evaluate"} <= rules

    # SLURM itself ran every one of them to completion, with the profile's resources
    # (its job completion log: one line of key=value fields per finished job).
    ctld = (slurm_cluster / "slurmctld.log").read_text(encoding="utf-8")
    accepted = set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", ctld))
    assert set(submitted.values()) <= accepted
    done = {}
    for line in (slurm_cluster / "jobcomp.log").read_text(encoding="utf-8").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        done[fields["JobId"]] = fields
    for job, slurm_id in submitted.items():
        rule, record = jobs[job].split()[1], done[slurm_id]
        assert record["JobState"] == "COMPLETED", (rule, record)
        if rule in GPU_RULES:  # 1 GPU (the config's) and cpus_per_gpu: 8 on the GPU partition
            assert (record["Partition"], record["ProcCnt"]) == ("YOUR_GPU_PARTITION", "8"), rule
        else:
            assert record["Partition"] == "YOUR_PARTITION", rule

    # The fit came out: loss falls with non-embedding parameters N on every evaluation set.
    fit = json.loads((workdir / "results" / "fit" / "scaling_law.json").read_text())
    assert fit["groups"]
    for group in fit["groups"]:
        n_fit = group["fits"]["N"]
        assert n_fit["b"] < 0 and math.isfinite(n_fit["r2"]), group["eval_set"]
