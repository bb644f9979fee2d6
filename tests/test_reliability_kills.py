"""Reliability under kills and reruns: SIGKILL at every stage, idempotence, determinism.

The end-to-end tests run a shrunk tiny experiment (one shard per split, half the training
tokens, a resume file every 10 steps) with a held-out corpus of local files that the tests
edit. Run A is uninterrupted; run B is killed (SIGKILL of Snakemake's whole process group)
once during each stage and rerun the way a user would, then compared with A.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, TINY_CONFIG, run_snakemake, write_shard

E2E = pytest.mark.e2e

# What each kill waits for: a file that appears once a job of that stage is running.
KILL_POINTS = [
    ("corpus preparation", "results/logs/prepare_reduce/*/*.log", "results/prepare/"),
    ("tokenizer training", "results/logs/train_tokenizer/*.log", "results/tokenizers/"),
    # a token array renamed into place, its job still writing the sidecar: on disk, incomplete
    ("tokenizing", "results/tokens/*/*/*/part-*.bin", "results/tokens/"),
    ("training", "results/models/*/*/resume/resume.pt", "results/models/"),
    ("evaluation", "results/logs/evaluate/*/*.log", "results/eval/"),
    ("fitting", "results/logs/fit_scaling_law/*.log", "results/fit/"),
]
# Files holding wall-clock figures (seconds, tokens/s): compared without those fields.
TIMED = re.compile(
    r"tokenizers/.*/train_info\.json|models/.*/(model\.pt|summary\.json|metrics\.csv)"
)
TIMING_KEYS = {"seconds", "seconds_per_mb", "train_time_s", "tokens_per_s", "resumed_from_step"}
MODELS = ["L1-D16", "L2-D32", "L2-D64"]


# ----------------------------------------------------------------------------- helpers


def write_config(path: Path, edit=None) -> Path:
    """The tiny config, shrunk, with a held-out corpus read from ``heldout/`` in the workdir."""
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["experiment_name"] = "lmscaling-kills"
    del cfg["corpora"]["urllib"]
    cfg["corpora"]["heldout"] = {"source": "files", "paths": ["heldout"], "min_chars": 64}
    cfg["eval"]["heldout_corpora"] = ["heldout"]
    cfg["data"]["num_shards"] = 1
    cfg["train"].update(tokens=60000, resume_every=10)
    if edit is not None:
        edit(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def new_workdir(path: Path) -> Path:
    """A workdir with its own copy of the held-out corpus (the stdlib's urllib package)."""
    held = path / "heldout"
    held.mkdir(parents=True)
    for src in sorted((Path(sysconfig.get_paths()["stdlib"]) / "urllib").glob("*.py")):
        shutil.copyfile(src, held / src.name)
    return path


def snakemake_cmd(workdir: Path, config: Path) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")] + [
        "--directory", str(workdir), "--configfile", str(config), "--cores", "2"
    ]  # fmt: skip


def incomplete(workdir: Path) -> set[str]:
    """Outputs Snakemake marked incomplete (jobs that were running and never finished)."""
    marks = (workdir / ".snakemake" / "incomplete").glob("*")
    return {base64.b64decode(m.name).decode() for m in marks}


def kill_when(workdir: Path, config: Path, watch: str, timeout: float = 600) -> set[str]:
    """Start the workflow, SIGKILL its process group once a new file matches ``watch``.

    Returns the outputs left marked incomplete (the jobs interrupted by the kill).
    """
    before = set(workdir.glob(watch))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(workdir / "killed-runs.log", "a") as out:
        proc = subprocess.Popen(
            snakemake_cmd(workdir, config),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    try:
        while not set(workdir.glob(watch)) - before:
            if proc.poll() is not None:
                tail = (workdir / "killed-runs.log").read_text()[-3000:]
                raise AssertionError(f"workflow ended ({proc.returncode}) before {watch}:\n{tail}")
            assert time.monotonic() < deadline, f"no {watch} after {timeout} s"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return incomplete(workdir)


def results_files(workdir: Path, skip=("logs", "benchmarks", "mlflow")) -> dict[str, Path]:
    root = workdir / "results"
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    return {k: p for k, p in files.items() if k.split("/")[0] not in skip}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(workdir: Path) -> dict[str, tuple[int, str]]:
    """(mtime ns, sha256) of every file under results/, MLflow store, logs and all."""
    files = results_files(workdir, skip=())
    return {k: (p.stat().st_mtime_ns, sha256(p)) for k, p in files.items()}


def dry_run_jobs(workdir: Path, config: Path) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job ``snakemake -n`` schedules."""
    proc = run_snakemake(workdir, "-n", config=config)
    jobs, rule = set(), None
    for line in (proc.stdout + proc.stderr).splitlines():
        if m := re.match(r"(?:local)?rule (\w+):$", line):
            rule = m.group(1)
            jobs.add((rule, ""))
        elif rule and (m := re.match(r"\s+wildcards: (.*)$", line)):
            jobs.discard((rule, ""))
            jobs.add((rule, m.group(1)))
        elif not line.startswith(" "):
            rule = None
    return jobs


def heldout_jobs(tokenizer="bpe-512") -> set[tuple[str, str]]:
    """Jobs that depend on the held-out corpus: its preparation and tokens, every model's
    evaluation (it is an evaluation set), the token statistics, the points and the fit."""
    shard = f"tokenizer={tokenizer}, corpus=heldout"
    return {
        ("prepare_map", "corpus=heldout, task=00000"),
        ("prepare_reduce", "corpus=heldout, shard=00000"),
        ("prepare_corpus", "corpus=heldout"),
        ("tokenize", f"{shard}, split=train, shard=00000"),
        ("tokenize", f"{shard}, split=val, shard=00000"),
        ("tokenizer_stats", f"tokenizer={tokenizer}"),
        *{("evaluate", f"tokenizer={tokenizer}, model={m}") for m in MODELS},
        ("collect_points", ""),
        ("fit_scaling_law", ""),
        ("all", ""),
    }


def load_model(path: Path) -> tuple[dict, dict]:
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["state_dict"], payload["extra"]["summary"]


def assert_same_training(a: Path, b: Path, model: str) -> None:
    """Equal weights, equal losses (CPU: bit for bit), equal summaries but for timing."""
    import torch

    base = f"results/models/bpe-512/{model}"
    weights_a, summary_a = load_model(a / base / "model.pt")
    weights_b, summary_b = load_model(b / base / "model.pt")
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), (model, key)
    json_a = json.loads((a / base / "summary.json").read_text())
    json_b = json.loads((b / base / "summary.json").read_text())
    for sa, sb in ((summary_a, summary_b), (json_a, json_b)):
        assert {k: v for k, v in sa.items() if k not in TIMING_KEYS} == {
            k: v for k, v in sb.items() if k not in TIMING_KEYS
        }
    assert json_a["train_loss"] == json_b["train_loss"]

    def losses(path: Path) -> list[tuple[str, ...]]:
        rows = [line.split(",") for line in path.read_text().splitlines()]
        cols = [rows[0].index(c) for c in ("step", "tokens", "loss", "lr")]
        return [tuple(r[c] for c in cols) for r in rows]

    assert losses(a / base / "metrics.csv") == losses(b / base / "metrics.csv")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def kills_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kills")


@pytest.fixture(scope="module")
def config(kills_root) -> Path:
    return write_config(kills_root / "config.yaml")


@pytest.fixture(scope="module")
def run_a(kills_root, config) -> Path:
    """Workdir of an uninterrupted run."""
    workdir = new_workdir(kills_root / "A")
    run_snakemake(workdir, config=config)
    return workdir


@pytest.fixture(scope="module")
def run_b(kills_root, config, run_a) -> dict:
    """Workdir of a run killed once in every stage, each time rerun as a user would."""
    workdir = new_workdir(kills_root / "B")
    facts: dict = {"workdir": workdir, "kills": []}
    for i, (stage, watch, prefix) in enumerate(KILL_POINTS):
        left = kill_when(workdir, config, watch)
        resume = sorted(p.parent.name for p in workdir.glob("results/models/*/*/resume"))
        facts["kills"].append({"stage": stage, "incomplete": left, "prefix": prefix})
        if stage == "training":
            facts["resumable"] = resume
        if i == 0:  # a plain rerun is refused: the killed run's lock is still there
            facts["plain_rerun"] = run_snakemake(workdir, config=config, check=False)
        run_snakemake(workdir, "--unlock", config=config)
        if stage == "tokenizing":  # without the profiles' rerun-incomplete: what to type
            facts["on_disk"] = sorted(p for p in left if (workdir / p).exists())
            facts["no_profile"] = run_snakemake(
                workdir, "-n", "--workflow-profile", "none", config=config, check=False
            )
    # A job killed mid-write leaves its temporary file (atomic_path) beside the output; plant
    # one where the killed fit job writes, whatever the kill's exact timing left.
    facts["planted"] = "results/fit/.scaling_law.json.k1ll3d00.tmp"
    (workdir / facts["planted"]).parent.mkdir(parents=True, exist_ok=True)
    (workdir / facts["planted"]).write_text('{"groups": [')
    facts["final"] = run_snakemake(workdir, config=config)
    return facts


# ----------------------------------------------------------------------------- kills


@E2E
def test_each_kill_interrupted_a_job_of_its_stage(run_b):
    for kill in run_b["kills"]:
        assert any(p.startswith(kill["prefix"]) for p in kill["incomplete"]), kill
    # the training kill came after a resume file was written
    assert run_b["resumable"], "no resume file when training was killed"


@E2E
def test_rerun_after_a_kill_says_what_to_type(run_b):
    plain = run_b["plain_rerun"]
    assert plain.returncode != 0
    assert "LockException" in plain.stderr and "--unlock" in plain.stderr
    # the killed tokenize job's array was already in place: Snakemake does not trust it
    assert any(p.endswith(".bin") for p in run_b["on_disk"]), run_b["on_disk"]
    bare = run_b["no_profile"]
    assert bare.returncode != 0
    said = bare.stdout + bare.stderr
    assert "IncompleteFilesException" in said and "--rerun-incomplete" in said
    assert all(p in said for p in run_b["on_disk"])  # naming the untrusted files


@E2E
def test_killed_run_ends_identical_to_uninterrupted(run_a, run_b):
    """Fit, points, evaluations, shards, tokenizer, token shards: the same bytes as run A."""
    b = run_b["workdir"]
    files_a, files_b = results_files(run_a), results_files(b)
    assert files_a.keys() == files_b.keys()
    untimed = sorted(k for k in files_a if not TIMED.fullmatch(k))
    assert {k for k in untimed if k.startswith("fit/")} >= {"fit/scaling_law.json"}
    differ = [k for k in untimed if sha256(files_a[k]) != sha256(files_b[k])]
    assert differ == []
    fit_a = json.loads(files_a["fit/scaling_law.json"].read_text())
    fit_b = json.loads(files_b["fit/scaling_law.json"].read_text())
    assert fit_a == fit_b
    law = {g["eval_set"]: g for g in fit_b["groups"]}["stdlib/val"]["fits"]["N"]
    assert law["b"] < 0 and law["n"] == 3
    for model in MODELS:
        assert_same_training(run_a, b, model)


@E2E
def test_killed_training_resumed_to_the_same_model(run_a, run_b):
    b = run_b["workdir"]
    for model in run_b["resumable"]:
        summary = json.loads((b / f"results/models/bpe-512/{model}/summary.json").read_text())
        assert summary["resumed_from_step"] > 0, model
        log = (b / f"results/logs/train_model/bpe-512/{model}.log").read_text()
        assert f"{model}: resuming from step {summary['resumed_from_step']}/" in log
        assert_same_training(run_a, b, model)


@E2E
def test_killed_run_leaves_nothing_partial(run_b, config):
    b = run_b["workdir"]
    leftovers = [p for p in (b / "results").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert f"Removing {run_b['planted']}, left by an interrupted job" in run_b["final"].stderr
    assert list(b.glob("results/models/*/*/resume")) == []
    assert list(b.glob("results/prepare/*/map/*.parquet")) == []  # temp() outputs removed
    assert incomplete(b) == set()
    dry = run_snakemake(b, "-n", config=config)
    assert "Nothing to be done" in dry.stdout + dry.stderr


@E2E
def test_killed_invocations_are_marked_in_mlflow(run_b):
    from mlflow.tracking import MlflowClient

    b = run_b["workdir"]
    client = MlflowClient(tracking_uri=f"sqlite:///{b / 'results/mlflow/mlflow.db'}")
    exp = client.get_experiment_by_name("lmscaling-kills")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = sorted(
        (r for r in runs if r.data.tags.get("lmscaling.role") == "parent"),
        key=lambda r: r.info.start_time,
    )
    assert [p.info.status for p in parents] == ["KILLED"] * len(KILL_POINTS) + ["FINISHED"]
    assert not [r for r in runs if r.info.status == "RUNNING"]


@E2E
def test_determinism_two_runs_same_bytes_and_losses(run_a, run_b):
    """Determinism: Parquet shards, tokenizer and token shards byte-identical, equal losses."""
    b = run_b["workdir"]
    files_a, files_b = results_files(run_a), results_files(b)
    groups = {
        "parquet shards": r"data/[^/]+/(train|val)/part-\d+\.parquet",
        "tokenizer": r"tokenizers/[^/]+/tokenizer\.json",
        "token shards": r"tokens/[^/]+/[^/]+/(train|val)/part-\d+\.(bin|json)",
    }
    for name, pattern in groups.items():
        keys = sorted(k for k in files_a if re.fullmatch(pattern, k))
        assert keys, name
        assert [sha256(files_a[k]) for k in keys] == [sha256(files_b[k]) for k in keys], name
    for model in MODELS:
        assert_same_training(run_a, b, model)


# ----------------------------------------------------------------------------- idempotence


@E2E
def test_after_success_nothing_scheduled_and_rerun_changes_no_file(run_a, config):
    dry = run_snakemake(run_a, "-n", config=config)
    assert "Nothing to be done" in dry.stdout + dry.stderr
    before = snapshot(run_a)
    assert any(k.startswith("mlflow/") for k in before)
    run_snakemake(run_a, config=config)
    # every file, the MLflow store and records included: with nothing to do the onstart and
    # onsuccess hooks do not run, so no parent run is opened
    assert snapshot(run_a) == before


@E2E
def test_edited_input_reruns_only_what_depends_on_it(run_a, config):
    path = run_a / "heldout" / "parse.py"
    text = path.read_bytes()
    later = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))  # touched, same content: Snakemake compares checksums
    assert dry_run_jobs(run_a, config) == set()
    path.write_bytes(text + b"# edited\n")
    try:
        assert dry_run_jobs(run_a, config) == heldout_jobs()
    finally:
        path.write_bytes(text)
    assert dry_run_jobs(run_a, config) == set()


@E2E
@pytest.mark.parametrize(
    ("change", "model"),
    [({"n_head": 2}, "L2-D64"), ({"d_model": 48}, "L2-D48")],
    ids=["n_head", "d_model"],
)
def test_changed_model_reruns_that_model_and_the_fit_only(run_a, kills_root, change, model):
    def edit(cfg):
        cfg["models"]["grid"][2].update(change)

    config = write_config(kills_root / f"config-{model}-{next(iter(change))}.yaml", edit)
    assert dry_run_jobs(run_a, config) == {
        ("train_model", f"tokenizer=bpe-512, model={model}"),
        ("evaluate", f"tokenizer=bpe-512, model={model}"),
        ("collect_points", ""),
        ("fit_scaling_law", ""),
        ("all", ""),
    }


# ----------------------------------------------------------------------------- no partial read


SRC_FILES = sorted((REPO / "src" / "lmscaling").glob("*.py")) + sorted(
    (REPO / "workflow" / "scripts").glob("*.py")
)
# Methods that write a file, and functions by their dotted name.
WRITER_METHODS = {
    "savefig", "write_table", "write_parquet", "write_csv", "tofile", "write_text",
    "write_bytes", "ParquetWriter", "save",
}  # fmt: skip
WRITER_FUNCTIONS = {"torch.save", "shutil.copy", "shutil.copy2", "shutil.copyfile", "os.link"}
# Writers that do not produce a rule's output, or write to a temporary name handed to them.
NOT_OUTPUTS = {
    "io.py:write_json": "the helpers themselves write inside atomic_path",
    "io.py:write_text": "the helpers themselves write inside atomic_path",
    "data.py:_ShardWriter": "reduce_shard hands it an atomic_path temporary",
    "records.py:RecordWriter": "MLflow records: append-only journals, a torn last line skipped",
    "gpus.py:_try_lock": "a GPU lock file, not an output",
}


def _opens_for_writing(node: ast.Call) -> bool:
    if not (isinstance(node.func, ast.Name) and node.func.id == "open"):
        return False
    modes = node.args[1:2] + [k.value for k in node.keywords if k.arg == "mode"]
    return any(isinstance(m, ast.Constant) and set(str(m.value)) & set("wax+") for m in modes)


def _is_writer(node: ast.Call) -> bool:
    method = node.func.attr if isinstance(node.func, ast.Attribute) else None
    return (
        _opens_for_writing(node)
        or method in WRITER_METHODS
        or ast.unparse(node.func) in WRITER_FUNCTIONS
    )


def _writes_outside_atomic_path(path: Path) -> list[str]:
    """``file:line in scope: call`` of every file write not inside ``with atomic_path``."""
    found = []

    def visit(node, scope: str, atomic: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope = node.name if scope == "<module>" else f"{scope}.{node.name}"
        if isinstance(node, ast.With | ast.AsyncWith):
            calls = [i.context_expr for i in node.items if isinstance(i.context_expr, ast.Call)]
            atomic = atomic or any(ast.unparse(c.func).endswith("atomic_path") for c in calls)
        if isinstance(node, ast.Call) and _is_writer(node) and not atomic:
            where = f"{path.name}:{scope}"
            if not any(where == k or where.startswith(k + ".") for k in NOT_OUTPUTS):
                found.append(f"{path.name}:{node.lineno} in {scope}: {ast.unparse(node)[:60]}")
        for child in ast.iter_child_nodes(node):
            visit(child, scope, atomic)

    visit(ast.parse(path.read_text()), "<module>", False)
    return found


def test_every_output_writer_writes_then_renames():
    """Each write to an output file happens inside ``with atomic_path(...)`` (write, rename)."""
    assert len(SRC_FILES) > 20
    found = [w for p in SRC_FILES for w in _writes_outside_atomic_path(p)]
    assert found == []


def test_writer_audit_catches_a_direct_write(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(p, t):\n    open(p, 'w').write('x')\n    t.write_parquet(p)\n"
        "    with atomic_path(p) as tmp:\n        t.write_parquet(tmp)\n"
    )
    assert [w.split(" in ")[0] for w in _writes_outside_atomic_path(bad)] == [
        "bad.py:2",
        "bad.py:3",
    ]


@pytest.fixture
def token_shard(tmp_path, train_shards):
    """A real token shard (tokenize_shard) with its sidecar, and its tokenizer."""
    from lmscaling import tokenizer

    spec = tokenizer.tokenizer_spec_from_config("t", {"type": "bpe", "vocab_size": 300})
    tok = tmp_path / "tok" / "tokenizer.json"
    tokenizer.train_tokenizer(spec, train_shards, tok)
    bin_path = tmp_path / "tokens" / "c" / "val" / "part-00000.bin"
    meta = tokenizer.tokenize_shard(tok, train_shards[0], bin_path, bin_path.with_suffix(".json"))
    return bin_path, meta, tok


def test_truncated_token_shard_is_never_trained_or_evaluated_on(token_shard):
    from lmscaling.evaluate import load_eval_set
    from lmscaling.tokenizer import TokenizerError
    from lmscaling.train import load_tokens

    bin_path, meta, _ = token_shard
    (whole,) = load_tokens([bin_path], meta["dtype"])
    assert len(whole) == meta["tokens"] > 100
    data = bin_path.read_bytes()
    bin_path.write_bytes(data[: len(data) // 2 // 2 * 2])  # a whole number of tokens, half
    with pytest.raises(ValueError, match=r"part-00000\.bin: holds \d+ tokens, its sidecar"):
        load_tokens([bin_path], meta["dtype"])
    with pytest.raises(TokenizerError, match=r"part-00000\.bin: holds \d+ tokens, its sidecar"):
        load_eval_set([bin_path])


def test_truncated_parquet_shard_is_refused_naming_it(tmp_path, token_shard):
    from lmscaling import tokenizer

    _, _, tok = token_shard
    shard = write_shard(tmp_path / "data" / "part-00000.parquet", ["some text"] * 50)
    shard.write_bytes(shard.read_bytes()[:-20])  # the footer is gone
    out = tmp_path / "out" / "part-00000.bin"
    with pytest.raises(tokenizer.TokenizerError, match=r"part-00000\.parquet: not a complete"):
        tokenizer.tokenize_shard(tok, shard, out, out.with_suffix(".json"))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # nothing written


def test_train_tokens_without_sidecar_still_load(tmp_path):
    """Bare token files (no sidecar) keep loading: the check needs the sidecar's count."""
    from lmscaling.train import load_tokens

    path = tmp_path / "bare.bin"
    np.arange(100, dtype="<u2").tofile(path)
    (arr,) = load_tokens([path], np.uint16)
    assert arr.tolist() == list(range(100))
