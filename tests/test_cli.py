"""The `lmscaling` command (fit, predict, plan), run as a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmscaling.chinchilla import ChinchillaFit

EXE = Path(sys.executable).with_name("lmscaling")
CMD = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "lmscaling.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=300)


def write_isoflop_table(path: Path) -> None:
    """3 compute budgets x 5 model sizes from L = 1.8 + 400/N^0.34 + 2000/D^0.36 (+ noise)."""
    rng = np.random.default_rng(0)
    lines = ["model,N,D,loss"]
    for c in (1e17, 1e18, 1e19):
        for n in 0.1 * (c / 6) ** 0.5 * np.geomspace(0.3, 3, 5):
            d = c / (6 * n)
            loss = (1.8 + 400 / n**0.34 + 2000 / d**0.36) * np.exp(rng.normal(0, 0.002))
            lines.append(f"m{n:.3g},{float(n)!r},{float(d)!r},{float(loss)!r}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    table = tmp / "points.csv"
    write_isoflop_table(table)
    proc = run(
        "fit",
        str(table),
        "-o",
        str(tmp / "out"),
        "--bootstrap",
        "50",
        "--axes",
        "N",
        "--holdout",
        "0",
    )
    assert proc.returncode == 0, proc.stderr
    return tmp, proc


def test_fit_writes_json_and_figures(fitted):
    tmp, proc = fitted
    result = json.loads((tmp / "out/scaling_law.json").read_text())
    (group,) = result["groups"]
    assert group["tokenizer"] == "-" and group["n_points"] == 15
    chin = group["chinchilla"]
    assert chin["params"]["alpha"] == pytest.approx(0.34, abs=0.1)
    assert chin["bootstrap"]["n_resamples"] == 50
    assert group["isoflop"]["n_budgets_used"] == 3
    for name in ("scaling_law", "residuals", "isoflop"):
        assert (tmp / f"out/{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert "<svg" in (tmp / f"out/{name}.svg").read_text()
    assert "Chinchilla: E =" in proc.stdout


def test_show_prints_the_fit_summary_of_a_saved_fit(fitted):
    tmp, proc = fitted
    path = tmp / "out/scaling_law.json"
    shown = run("show", str(path))
    assert shown.returncode == 0, shown.stderr
    # the same summary as `fit` printed, without its "wrote ..." line
    assert proc.stdout.startswith(shown.stdout) and shown.stdout.startswith("all points: 15 points")
    group = json.loads(path.read_text())["groups"][0]
    b_lo, b_hi = group["fits"]["N"]["b_ci"]
    assert f"b [{b_lo:.4g}, {b_hi:.4g}]  R^2 {group['fits']['N']['r2']:.3f}" in shown.stdout
    as_json = json.loads(run("show", str(path), "--json").stdout)
    assert as_json["groups"] == [group]
    missing = run("show", str(path), "--tokenizer", "bpe-9")
    assert missing.returncode == 1 and "groups are ['all points']" in missing.stderr


def test_predict_and_plan_read_the_saved_fit(fitted):
    tmp, _ = fitted
    path = tmp / "out/scaling_law.json"
    proc = run("predict", str(path), "--N", "1e9", "--D", "2e10", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["C"] == pytest.approx(6 * 1e9 * 2e10)
    chin = [r for r in out["predictions"] if r["law"] == "chinchilla"][0]
    law = ChinchillaFit.from_dict(json.loads(path.read_text())["groups"][0]["chinchilla"])
    assert chin["loss"] == pytest.approx(float(law.predict([[1e9, 2e10]])[0]), rel=1e-12)
    lo, hi = chin["confidence_interval"]
    assert lo <= chin["loss"] <= hi
    assert chin["prediction_interval"][0] <= lo
    n_law = [r for r in out["predictions"] if r["law"] == "L(N) power law"][0]
    assert n_law["confidence_interval"][0] < n_law["loss"] < n_law["confidence_interval"][1]

    proc = run("plan", str(path), "--budget", "1e21", "1e23", "--json")
    assert proc.returncode == 0, proc.stderr
    plans = json.loads(proc.stdout)["plans"]
    chin_plans = [p for p in plans if p["method"] == "chinchilla"]
    assert [p["C"] for p in chin_plans] == [1e21, 1e23]
    for p in chin_plans:
        assert 6 * p["N_opt"] * p["D_opt"] == pytest.approx(p["C"])
        assert p["N_opt_ci"][0] <= p["N_opt"] <= p["N_opt_ci"][1]
        assert float(law.allocation(p["C"])["N_opt"]) == pytest.approx(p["N_opt"])
    assert {p["method"] for p in plans} == {"chinchilla", "isoflop"}
    for p in (p for p in plans if p["method"] == "isoflop"):
        for name in ("N_opt", "D_opt", "tokens_per_parameter"):
            assert p[f"{name}_ci"][0] < p[name] < p[f"{name}_ci"][1]
    text = run("plan", str(path), "--budget", "1e21")
    assert text.returncode == 0 and "N_opt =" in text.stdout
    # a table without tokenizer / eval_set columns: its one group is "all points" everywhere
    assert text.stdout.startswith("all points chinchilla C = 1e+21 FLOP:")
    predicted = run("predict", str(path), "--N", "1e9")
    assert "all points L(N) power law:" in predicted.stdout and "- -" not in predicted.stdout
    # a reader that goes away (`| head`) ends the command quietly
    proc = subprocess.Popen(
        [*CMD, "plan", str(path), "--budget", *[f"1e{k}" for k in range(18, 26)]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0 and proc.stderr.read() == b""
    # C = 6ND overflows a float: strict JSON with null, not Infinity
    huge = run("predict", str(path), "--N", "1e200", "--D", "1e200", "--json")
    assert huge.returncode == 0 and json.loads(huge.stdout)["C"] is None
    assert "Infinity" not in huge.stdout


def test_bad_input_exits_1_naming_the_file(tmp_path):
    proc = run("fit", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 1 and "missing.csv" in proc.stderr
    table = tmp_path / "t.csv"
    table.write_text("params,loss\n1e6,3.0\n")
    proc = run("fit", str(table), "--column", "N=size")
    assert proc.returncode == 1 and "t.csv: no column(s) ['size']" in proc.stderr
    proc = run("predict", str(table), "--N", "1e9")
    assert proc.returncode == 1 and "t.csv: not JSON" in proc.stderr
    # one D for every model: no compute-optimal analysis to plan with
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("N,D,loss\n1e6,1e8,3.0\n1e7,1e8,2.7\n1e8,1e8,2.5\n")
    proc = run("fit", str(fixed), "-o", str(tmp_path / "f"), "--bootstrap", "0", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    proc = run("plan", str(tmp_path / "f/scaling_law.json"), "--budget", "1e21")
    assert proc.returncode == 1 and "D takes a single value" in proc.stderr
    assert run("plan", str(table), "--budget", "-1").returncode == 2  # usage error
    table.write_text("N,D,loss\n1e6,1e8,three\n")
    proc = run("fit", str(table))
    assert proc.returncode == 1 and "t.csv: column 'loss' is not numeric" in proc.stderr


def test_fit_without_plots_removes_the_figures_of_an_earlier_fit(fitted, tmp_path):
    tmp, _ = fitted
    out = tmp_path / "out"
    out.mkdir()
    earlier = tmp / "out/scaling_law.png"
    (out / "scaling_law.png").write_bytes(earlier.read_bytes())
    (out / "notes.png").write_bytes(b"mine")  # not a figure of the fit: kept
    proc = run("fit", str(tmp / "points.csv"), "-o", str(out), "--no-plots", "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.png", "scaling_law.json"]
    assert f"removed the figures of an earlier fit: {out / 'scaling_law.png'}\n" in proc.stdout


def test_fit_prints_each_warning_once(tmp_path):
    # 4 models, one D: L(D) and Chinchilla are skipped with a warning, each printed once
    table = tmp_path / "points.csv"
    rows = [(n, 2e6, 7.5 * n**-0.045) for n in (1e4, 3e4, 1e5, 3e5)]
    table.write_text("N,D,loss\n" + "".join(f"{n},{d},{loss}\n" for n, d, loss in rows))
    proc = run("fit", str(table), "-o", str(tmp_path / "out"), "--no-plots", "--bootstrap", "20")
    assert proc.returncode == 0, proc.stderr
    (group,) = json.loads((tmp_path / "out/scaling_law.json").read_text())["groups"]
    assert any("D takes a single value" in w for w in group["warnings"])
    assert proc.stdout.startswith("all points: 4 points\n")  # no tokenizer / eval_set columns
    output = proc.stdout + proc.stderr
    for warning in group["warnings"]:
        assert output.count(warning) == 1, warning


def write_table(path: Path, rows) -> Path:
    path.write_text("N,D,loss\n" + "".join(f"{n!r},{d!r},{loss!r}\n" for n, d, loss in rows))
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty.csv: not a readable csv table: empty CSV"),
        ("cut.parquet", b"PAR1\x00\x00", "cut.parquet: not a readable parquet table"),
        ("folder.csv", None, "folder.csv: not a file"),
        ("absent.csv", False, "absent.csv: no such file"),
    ],
)
def test_fit_unreadable_tables_one_line_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    elif content is not False:
        path.write_bytes(content)
    proc = run("fit", str(path), "-o", str(tmp_path / "out"))
    assert proc.returncode == 1 and message in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_fit_reads_a_name_with_glob_characters_as_one_file(tmp_path):
    rows = [(n, 2e6 * n, 7.5 * n**-0.05) for n in (1e4, 3e4, 1e5, 3e5)]
    write_table(tmp_path / "p[1].csv", rows)
    write_table(tmp_path / "p1.csv", rows[:2])  # what the glob p[1].csv would match
    proc = run("fit", str(tmp_path / "p[1].csv"), "-o", str(tmp_path / "o"), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    assert "all points: 4 points" in proc.stdout


@pytest.mark.parametrize(
    ("option", "value"),
    [("--confidence", "1.5"), ("--confidence", "nan"), ("--confidence", "0"), ("--seed", "-1")]
    + [("--bootstrap", "-5"), ("--holdout", "-1"), ("--drop-highest-loss", "-4")],
)
def test_fit_rejects_bad_option_values(tmp_path, option, value):
    proc = run("fit", str(tmp_path / "any.csv"), option, value)
    assert proc.returncode == 2 and f"argument {option}: '{value}'" in proc.stderr


def test_fit_single_model_and_one_budget_tables_are_skipped_not_errors(tmp_path):
    # one model: nothing to fit; three models at one budget with C = 6ND off in the last bits
    one = write_table(tmp_path / "one.csv", [(1e6, 2e7, 3.0)])
    budget = [
        (n, 1e18 / (6 * n) * (1 + 1e-15 * i), 3.0 + 0.01 * i) for i, n in enumerate((1e6, 3e6, 1e7))
    ]
    same_c = write_table(tmp_path / "budget.csv", budget)
    for table, skipped in ((one, "N takes a single value"), (same_c, "C takes a single value")):
        out = tmp_path / table.stem
        proc = run("fit", str(table), "-o", str(out), "--bootstrap", "10")
        assert proc.returncode == 0, proc.stderr
        assert skipped in proc.stdout and "Traceback" not in proc.stderr
        assert (out / "scaling_law.png").stat().st_size > 0  # a figure saying why
    fits = json.loads((tmp_path / "budget/scaling_law.json").read_text())["groups"][0]["fits"]
    assert set(fits) == {"N", "D"}


def test_fit_drop_highest_loss_per_group_and_holdout_too_large(tmp_path):
    rows = [(n, 20 * n, 7.5 * n**-0.05) for n in (1e4, 3e4, 1e5, 3e5, 1e6)]
    lines = ["tokenizer,N,D,loss"] + [
        f"{t},{n!r},{d!r},{loss!r}" for t in "ab" for n, d, loss in rows
    ]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    args = ["--no-plots", "--bootstrap", "10", "--axes", "N", "--holdout", "5"]
    proc = run(
        "fit", str(tmp_path / "t.csv"), "-o", str(tmp_path / "o"), *args, "--drop-highest-loss", "2"
    )
    assert proc.returncode == 0, proc.stderr
    groups = json.loads((tmp_path / "o/scaling_law.json").read_text())["groups"]
    assert [g["n_points"] for g in groups] == [3, 3]  # the 2 smallest models of each group left out
    assert all(g["extrapolation"] == [] for g in groups)
    assert "holding out the 5 largest N leaves fewer than 2 values of N to fit" in proc.stdout
    proc = run(
        "fit",
        str(tmp_path / "t.csv"),
        "-o",
        str(tmp_path / "o2"),
        *args,
        "--drop-highest-loss",
        "5",
    )
    assert proc.returncode == 1
    assert "cannot drop the 5 highest-loss points of group a/-, which has 5" in proc.stderr


def test_fit_numeric_tokenizer_names_stay_names(tmp_path):
    rows = [(n, 20 * n, 7.5 * n**-0.05) for n in (1e4, 3e4, 1e5, 3e5)]
    lines = ["tokenizer,N,D,loss"] + [
        f"{t},{n!r},{d!r},{x!r}" for t in (512, 1024) for n, d, x in rows
    ]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    proc = run("fit", str(tmp_path / "t.csv"), "-o", str(tmp_path / "o"), "--bootstrap", "10")
    assert proc.returncode == 0, proc.stderr
    assert "1024: 4 points" in proc.stdout and "512: 4 points" in proc.stdout
    fit_json = str(tmp_path / "o/scaling_law.json")
    pred = run("predict", fit_json, "--N", "1e6", "--tokenizer", "512", "--json")
    assert pred.returncode == 0, pred.stderr
    assert json.loads(pred.stdout)["predictions"]


def test_damaged_fits_and_bad_options_exit_1_or_2_naming_the_problem(fitted, tmp_path):
    tmp, _ = fitted
    good = json.loads((tmp / "out/scaling_law.json").read_text())
    no_a = json.loads(json.dumps(good))
    del no_a["groups"][0]["fits"]["N"]["a"]
    for name, content in {
        "empty_group": {"groups": [{}]},
        "groups_text": {"groups": "x"},
        "no_a": no_a,
    }.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(content))
        commands = [["predict", str(path), "--N", "1e9"]]
        if name != "no_a":  # plan reads no power law
            commands.append(["plan", str(path), "--budget", "1e21"])
        for args in commands:
            proc = run(*args)
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, (name, proc.stderr)
            assert f"{path}: not a" in proc.stderr
    table = tmp_path / "t.csv"
    write_isoflop_table(table)
    afile = tmp_path / "afile"
    afile.write_text("")
    proc = run("fit", str(table), "-o", str(afile), "--no-plots", "--bootstrap", "0")
    assert proc.returncode == 1 and f"-o {afile}: exists and is not a directory" in proc.stderr
    proc = run("fit", str(table), "--bootstrap", "2000000000")
    assert proc.returncode == 2 and "at most 100,000 resamples" in proc.stderr
    # the text and JSON outputs agree on "nothing to predict": exit 1 in both
    path = tmp / "out/scaling_law.json"
    assert run("predict", str(path), "--N", "1e9", "--tokenizer", "-").returncode == 0
    only_d = tmp_path / "d.json"
    only_d.write_text(json.dumps({**good, "groups": [{**good["groups"][0], "fits": {}}]}))
    for extra in ([], ["--json"]):
        proc = run("predict", str(only_d), "--N", "1e9", *extra)  # no D: no Chinchilla
        assert proc.returncode == 1, extra


def test_names_stay_text_budget_labels_and_interval_levels(tmp_path):
    table = tmp_path / "t.csv"
    write_isoflop_table(table)
    lines = table.read_text().splitlines()
    # a tokenizer named 007, and each row's IsoFLOP budget as a column
    budgets = [1e17] * 5 + [1e18] * 5 + [1e19] * 5
    rows = [f"{lines[0]},tokenizer,budget"]
    rows += [f"{row},007,{b!r}" for row, b in zip(lines[1:], budgets, strict=True)]
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "o"
    proc = run("fit", str(table), "-o", str(out), "--no-plots", "--bootstrap", "20")
    assert proc.returncode == 0, proc.stderr
    (group,) = json.loads((out / "scaling_law.json").read_text())["groups"]
    assert group["tokenizer"] == "007"
    assert [b["C"] for b in group["isoflop"]["budgets"]] == [1e17, 1e18, 1e19]
    proc = run("predict", str(out / "scaling_law.json"), "--N", "1e9", "--tokenizer", "007")
    assert proc.returncode == 0 and proc.stdout.count("95% CI") >= 1
    proc = run("fit", str(table), "-o", str(out), "--no-plots", "--confidence", "0.995")
    assert proc.returncode == 0, proc.stderr
    proc = run("predict", str(out / "scaling_law.json"), "--N", "1e9")
    assert "99.5% CI" in proc.stdout and "100% CI" not in proc.stdout
    table.write_text("\n".join(rows[:2] + [rows[2].rsplit(",", 1)[0] + ",C1"]) + "\n")
    proc = run("fit", str(table), "-o", str(out))
    assert proc.returncode == 1 and "column 'budget' is not numeric" in proc.stderr
