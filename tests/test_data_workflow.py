"""The preparation jobs in Snakemake: remote input over HTTP with a sha256 pin, byte-identical
outputs across --cores values, the filter report in MLflow.

A local HTTP server on the loopback interface stands in for a public dataset host; Snakemake
fetches the file through its HTTP storage plugin.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_snakemake

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    """A folder served by ``python -m http.server`` on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path_factory.mktemp("www")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.1)
        yield root, f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def docs(n: int, seed: int) -> list[str]:
    """``n`` distinct documents of 40 random words (no two near duplicates)."""
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(10_000)}" for _ in range(40)) for _ in range(n)]


def make_config(tmp: Path, base_url: str, sha256: str) -> Path:
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    texts = docs(40, 1)
    for i in range(4):  # the first 10 documents in every file: duplicates across map jobs
        part = texts[i * 10 : (i + 1) * 10] + texts[:10]
        (data / f"part-{i}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
    cfg = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    cfg["corpora"] = {
        "web": {
            "source": "files",
            "paths": [str(data)],
            "dedup": {"near": True},
        },
        "remote": {
            "source": "files",
            "remote": [{"url": f"{base_url}/remote.jsonl.gz", "sha256": sha256}],
            "weight": 2.0,
        },
    }
    cfg["eval"]["heldout_corpora"] = []
    # Two map jobs of two files each.
    cfg["data"].update({"val_fraction": 0.3, "num_shards": 2, "map_task_bytes": 12000})
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snakemake(workdir: Path, config: Path, cores: int, *targets: str):
    return run_snakemake(workdir, *targets, config=config, cores=cores, check=False, timeout=600)


TARGETS = [f"results/data/{c}/manifest.json" for c in ("web", "remote")]


def test_prepare_jobs_remote_input_and_cores(tmp_path, http_root):
    root, base_url = http_root
    remote = gzip.compress(
        "".join(json.dumps({"text": t}) + "\n" for t in docs(30, 2)).encode(), mtime=0
    )
    (root / "remote.jsonl.gz").write_bytes(remote)
    config = make_config(tmp_path, base_url, hashlib.sha256(remote).hexdigest())
    outputs = {}
    for cores in (1, 2):
        workdir = tmp_path / f"cores{cores}"
        proc = snakemake(workdir, config, cores, *TARGETS)
        assert proc.returncode == 0, proc.stderr[-4000:]
        data = workdir / "results/data"
        outputs[cores] = {
            p.relative_to(data): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()
        }
    assert outputs[1] == outputs[2]  # byte-identical whatever the parallelism
    assert len(outputs[1]) == 2 * (4 + 2)  # per corpus: 4 shards, manifest, filter report

    workdir = tmp_path / "cores2"
    web = json.loads((workdir / "results/data/web/manifest.json").read_text())
    assert web["input_files"] == 4 and web["documents_in"] == 80
    assert web["removed"]["duplicate"] == 40 and web["documents_out"] == 40
    assert web["removed"]["near_duplicate"] == 0
    maps = sorted((workdir / "results/prepare/web/map").glob("*.json"))
    assert len(maps) == 2  # two map jobs
    assert not list((workdir / "results/prepare").rglob("*.parquet"))  # temporary files gone
    rem = json.loads((workdir / "results/data/remote/manifest.json").read_text())
    assert rem["documents_out"] == 30

    # Nothing reruns: the published shards are newer than every input of their job.
    dry = snakemake(workdir, config, 2, "-n", *TARGETS)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]

    # The filter report reached MLflow as metrics and artifacts.
    mlflow = pytest.importorskip("mlflow")
    client = mlflow.tracking.MlflowClient(f"sqlite:///{workdir}/results/mlflow/mlflow.db")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="attributes.run_name = 'prepare_corpus/web'",
    )
    assert runs and runs[0].data.metrics["removed.duplicate"] == 40
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"manifest.json", "filter_report.csv"} <= artifacts

    # Training samples the corpora by their weights (1 : 2), not by their sizes.
    target = "results/models/bpe-512/L1-D16/summary.json"
    proc = snakemake(workdir, config, 2, target)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((workdir / target).read_text())
    mix, expected = summary["mixture"], {"web": 1 / 3, "remote": 2 / 3}
    assert {c: m["probability"] for c, m in mix.items()} == pytest.approx(expected)
    # the probabilities training used, in the order of the corpora
    assert summary["train"]["mixture"] == pytest.approx([expected[c] for c in mix])
    assert sum(m["tokens"] for m in mix.values()) == summary["train_tokens_available"]
    for m in mix.values():
        assert m["epochs"] == pytest.approx(summary["D"] * m["probability"] / m["tokens"])

    # How often a resume file is written changes no output, nor does writing out a default,
    # nor a setting that does not act here (WSD's decay under the cosine schedule, GPUs for
    # CPU training): nothing reruns.
    edited = yaml.safe_load(config.read_text())
    edited["train"].update(resume_every=7, decay_fraction=0.5, gpus=2)
    edited["corpora"]["web"]["clean"] = {"nfc": True, "collapse_whitespace": False}
    config.write_text(yaml.safe_dump(edited))
    dry = snakemake(workdir, config, 2, "-n", target)
    assert "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]

    # A new weight reruns the training only: the data, tokenizer and token shards stand.
    edited["corpora"]["remote"]["weight"] = 3.0
    config.write_text(yaml.safe_dump(edited))
    dry = snakemake(workdir, config, 2, "-n", target)
    planned = dry.stdout + dry.stderr
    assert "train_model" in planned, planned[-3000:]
    for rule in ("prepare_map", "prepare_reduce", "prepare_corpus", "train_tokenizer", "tokenize"):
        assert f"rule {rule}:" not in planned and f"\n{rule} " not in planned, rule


def test_remote_pin_mismatch_stops_the_map_job(tmp_path, http_root):
    root, base_url = http_root
    (root / "remote.jsonl.gz").write_bytes(gzip.compress(b'{"text": "changed upstream"}\n'))
    config = make_config(tmp_path, base_url, "0" * 64)
    proc = snakemake(tmp_path / "w", config, 1, "results/data/remote/manifest.json")
    assert proc.returncode != 0
    log = (tmp_path / "w/results/logs/prepare_map/remote/00000.log").read_text()
    assert f"{base_url}/remote.jsonl.gz: sha256 of the fetched file is" in log
    assert "pins " + "0" * 64 in log
