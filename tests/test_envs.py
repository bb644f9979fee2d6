"""The conda environments in envs/: parse, exact pins, the same versions as the Python package,
one env for every rule that runs code, and every package that rule's code imports."""

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
RULES = ROOT / "workflow" / "rules"
SRC = ROOT / "src" / "lmscaling"

# conda-forge name -> PyPI name, where they differ.
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
# import name -> PyPI name, where they differ.
IMPORT_TO_PYPI = {"yaml": "pyyaml"}
NOT_PINNED_IN_CONSTRAINTS = {"python", "pip"}
EXACT_CONDA = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)=(?P<version>\d+(\.\d+)+)(=[^=\s]+)?$")
EXACT_PIP = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>\d+(\.\d+)+)$")
CODE_DIRECTIVES = ("script", "shell", "notebook", "wrapper")
# Imports inside library functions that only some rules reach, per module file: they are not
# required of every env whose rules import the module.
OPTIONAL_IMPORTS = {
    # log_model_checkpoint (mlflow.pytorch) runs in train_model only, in envs/torch.yaml.
    "tracking.py": {"torch", "lmscaling.model"},
    # Web pages and language identification are read and filtered in the data rules only
    # (test_data_env_holds_the_web_extractors_and_language_model).
    "readers.py": {"lmscaling.web"},
    "filters.py": {"py3langid"},
}


def env_files():
    return sorted(ENVS.glob("*.yaml"))


def env_pins(path):
    """{PyPI name: version} of one env file; raises AssertionError on a loose pin."""
    env = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert env["channels"] == ["conda-forge", "nodefaults"], path.name
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, f"{path.name}: unknown entry {dep}"
            for item in dep["pip"]:
                m = EXACT_PIP.match(item)
                assert m, f"{path.name}: pip package {item!r} is not pinned with =="
                pins[m["name"].lower()] = m["version"]
            continue
        m = EXACT_CONDA.match(dep)
        assert m, f"{path.name}: {dep!r} is not pinned to an exact version (name=X.Y.Z)"
        name = m["name"].lower()
        pins[CONDA_TO_PYPI.get(name, name)] = m["version"]
    return pins


def constraints():
    pins = {}
    for line in (ENVS / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            m = EXACT_PIP.match(line)
            assert m, f"constraints.txt: {line!r} is not pinned with =="
            pins[m["name"].lower()] = m["version"]
    return pins


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def rules():
    """{rule name: (directives text, rule file)} of every rule in workflow/rules/*.smk."""
    found = {}
    for path in sorted(RULES.glob("*.smk")):
        text = path.read_text(encoding="utf-8")
        starts = [(m.start(), m["name"]) for m in re.finditer(r"^rule (?P<name>\w+):", text, re.M)]
        for i, (start, name) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            body = re.split(r"^\S", text[start:end].split("\n", 1)[1], maxsplit=1, flags=re.M)
            found[name] = (body[0], path)
    return found


def directive_value(body, directive):
    m = re.search(rf"^\s+{directive}:\s*\n\s+\"(?P<value>[^\"]+)\"", body, re.M)
    return m["value"] if m else None


def third_party_imports(path):
    """Dotted names of the non-stdlib imports of a file, lazy ones too (lmscaling included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    optional = OPTIONAL_IMPORTS.get(path.name, set()) if path.parent == SRC else set()
    return {
        n
        for n in names
        if n.split(".")[0] not in sys.stdlib_module_names
        and not any(n == o or n.startswith(o + ".") for o in optional)
    }


def required_packages(script):
    """PyPI names imported by a job script and by the lmscaling modules it reaches."""
    todo, seen, packages = [script], set(), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in third_party_imports(path):
            top = name.split(".")[0]
            if top != "lmscaling":
                packages.add(IMPORT_TO_PYPI.get(top, top))
                continue
            parts = name.split(".")[1:]
            for depth in range(len(parts) + 1):
                mod = SRC.joinpath(*parts[:depth]).with_suffix(".py") if depth else None
                if mod is not None and mod.exists():
                    todo.append(mod)
            todo.append(SRC / "__init__.py")
    return packages


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_env_parses_and_pins_every_package(path):
    pins = env_pins(path)
    assert "python" in pins and pins["python"].startswith("3.")
    assert SpecifierSet(pyproject()["requires-python"]).contains(pins["python"])


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_env_versions_match_constraints(path):
    pinned = constraints()
    for name, version in env_pins(path).items():
        if name in NOT_PINNED_IN_CONSTRAINTS:
            continue
        assert name in pinned, f"{path.name}: {name} missing from envs/constraints.txt"
        assert pinned[name] == version, (
            f"{path.name} pins {name}={version}, envs/constraints.txt {pinned[name]}"
        )


def test_all_envs_use_one_python():
    assert len({env_pins(p)["python"] for p in env_files()}) == 1


def make_venv_extras():
    """The extras that `make venv` installs (its `-e '.[a,b]'`)."""
    m = re.search(r"-e '\.\[(?P<extras>[\w,]+)\]'", (ROOT / "Makefile").read_text(encoding="utf-8"))
    assert m, "Makefile installs no `-e '.[extras]'`"
    return m["extras"].split(",")


def test_constraints_pin_every_dependency_within_pyproject_ranges():
    """Everything `make venv` installs has an exact version, inside pyproject's range."""
    project = pyproject()
    pinned = constraints()
    deps = list(project["dependencies"])
    for extra in make_venv_extras():
        deps += project["optional-dependencies"][extra]
    for dep in map(Requirement, deps):
        name = dep.name.lower()
        assert name in pinned, f"{dep.name} (pyproject.toml) is not in envs/constraints.txt"
        assert dep.specifier.contains(pinned[name], prereleases=True), (
            f"envs/constraints.txt pins {name}=={pinned[name]} outside pyproject's {dep}"
        )


def test_makefile_installs_with_the_constraints():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "-c envs/constraints.txt" in makefile


def test_every_rule_that_runs_code_names_an_existing_env():
    found = rules()
    assert {"prepare_corpus", "train_model", "fit_scaling_law"} <= set(found)
    for name, (body, path) in found.items():
        if not any(directive_value(body, d) for d in CODE_DIRECTIVES):
            assert re.search(r"^\s+run:", body, re.M) is None or "conda:" not in body
            continue
        env = directive_value(body, "conda")
        assert env, f"rule {name} ({path.name}) has no conda: env"
        assert (path.parent / env).resolve().parent == ENVS, f"rule {name}: {env}"
        assert (path.parent / env).exists(), f"rule {name}: {env} does not exist"


def test_each_env_holds_what_its_rules_import():
    for name, (body, path) in rules().items():
        script = directive_value(body, "script")
        if script is None:
            continue
        env = path.parent / directive_value(body, "conda")
        missing = required_packages((path.parent / script).resolve()) - set(env_pins(env))
        assert not missing, f"rule {name}: {env.name} lacks {sorted(missing)}"


def test_driver_env_holds_what_the_snakefile_imports():
    text = (RULES / "common.smk").read_text(encoding="utf-8")
    modules = re.findall(r"^(?:from|import) (lmscaling[\w.]*)", text, re.M)
    assert modules, "common.smk imports nothing from lmscaling"
    code = "\n".join(f"import {m}" for m in modules)
    probe = ENVS / "_probe.py"
    try:
        probe.write_text(code, encoding="utf-8")
        needed = required_packages(probe) | {"mlflow"}
    finally:
        probe.unlink()
    missing = needed - set(env_pins(ENVS / "mlflow.yaml"))
    assert not missing, f"envs/mlflow.yaml lacks {sorted(missing)}"


def test_data_env_holds_the_web_extractors_and_language_model():
    needed = required_packages(SRC / "web.py") | {"py3langid"}
    assert {"fastwarc", "resiliparse"} <= needed
    for name, (body, path) in rules().items():
        if directive_value(body, "script") == "../scripts/prepare_map.py":
            env = path.parent / directive_value(body, "conda")
            missing = needed - set(env_pins(env))
            assert not missing, f"rule {name}: {env.name} lacks {sorted(missing)}"
            break
    else:
        raise AssertionError("no rule runs prepare_map.py")


def test_required_packages_follows_library_imports(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        "import yaml\nfrom lmscaling import fit\nfrom lmscaling.io import write_json\n"
    )
    needed = required_packages(script)
    assert {"pyyaml", "numpy", "statsmodels", "matplotlib"} <= needed
    assert "torch" not in needed
