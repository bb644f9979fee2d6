"""A training process killed with SIGKILL and rerun ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from lmscaling.train import load_resume

CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np, torch
    from lmscaling.model import GPTConfig
    from lmscaling.train import TrainConfig, train

    torch.set_num_threads(1)
    state_dir, out, mode, precision = sys.argv[1:5]
    model_cfg = GPTConfig(vocab_size=64, context_length=32, n_layer=2, d_model=32, n_head=2)
    cfg = TrainConfig(
        tokens=24 * 8 * 32, batch_size=8, log_every=4, device="cpu", seed=5,
        resume_every=6, checkpoint_fractions=(0.25,), precision=precision,
    )
    tokens = np.random.default_rng(0).integers(0, 64, 5000).astype(np.uint16)

    def on_log(step, row):
        if mode == "hang" and step == 12:  # stuck after the resume file of step 6
            time.sleep(600)

    model, summary, metrics = train(model_cfg, cfg, tokens, on_log=on_log, state_dir=state_dir)
    torch.save({"state": model.state_dict(), "summary": summary, "metrics": metrics}, out)
    """
)


def run_child(tmp_path, state_dir, out, mode, precision):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / f"{Path(state_dir).name}-{mode}.log", "w")
    cmd = [sys.executable, str(script), str(state_dir), str(out), mode, precision]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def logs(tmp_path):
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(tmp_path.glob("*.log")))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sigkilled_training_resumes_to_the_same_result(tmp_path, precision):
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    child = run_child(tmp_path, killed_dir, tmp_path / "killed.pt", "hang", precision)
    resume = killed_dir / "resume.pt"
    deadline = time.monotonic() + 300
    try:
        while not resume.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert resume.exists(), f"the child wrote no resume file:\n{logs(tmp_path)}"
    finally:
        child.send_signal(signal.SIGKILL)  # also when the assertion fails: never left hanging
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "killed.pt").exists()  # it did not finish
    assert load_resume(resume)["step"] == 6
    assert (killed_dir / "frac-0.25.pt").exists()  # written at step 6 as well

    rerun = run_child(tmp_path, killed_dir, tmp_path / "killed.pt", "run", precision)
    clean = run_child(tmp_path, clean_dir, tmp_path / "clean.pt", "run", precision)
    assert rerun.wait(timeout=300) == 0 and clean.wait(timeout=300) == 0, logs(tmp_path)

    resumed = torch.load(tmp_path / "killed.pt", weights_only=True)
    reference = torch.load(tmp_path / "clean.pt", weights_only=True)
    assert resumed["summary"]["resumed_from_step"] == 6
    assert reference["summary"]["resumed_from_step"] == 0
    assert resumed["summary"]["precision"] == reference["summary"]["precision"] == precision
    # Bit for bit on CPU: the same final loss, loss curve and weights.
    assert resumed["summary"]["train_loss"] == reference["summary"]["train_loss"]
    assert [r["loss"] for r in resumed["metrics"]] == [r["loss"] for r in reference["metrics"]]
    assert [r["step"] for r in resumed["metrics"]] == [4, 8, 12, 16, 20, 24]
    for key, value in reference["state"].items():
        assert torch.equal(resumed["state"][key], value), key
    # The fraction checkpoint written before the kill is the one the clean run wrote.
    a = torch.load(killed_dir / "frac-0.25.pt", weights_only=True)["state_dict"]
    b = torch.load(clean_dir / "frac-0.25.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)
