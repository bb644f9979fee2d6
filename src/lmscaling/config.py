"""Experiment configuration: checks that the JSON schema cannot express.

``workflow/schemas/config.schema.yaml`` validates types, ranges and unknown keys at parse time.
This module adds the cross-field rules (a head count that divides the width, unique model ids,
one token-budget rule, names that are safe in paths) so a bad config stops before any job, with
one message naming the key.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
"""Corpus and tokenizer names: letters, digits, '.', '_' and '-', not starting with a separator.

Names become path components and wildcard values, so '/', '..' and shell metacharacters are
refused here rather than escaped later.
"""


class ConfigError(ValueError):
    """Invalid experiment configuration; the message names the offending key."""


MODEL_ID_RE = r"L[0-9]+-D[0-9]+(-C[0-9.]+e[0-9]+)?"
"""Model ids: ``L{n_layer}-D{d_model}``, with ``-C{budget}`` under a compute budget rule."""


@dataclass(frozen=True)
class ModelShape:
    """One grid point: a GPT decoder shape, and its compute budget C under the ``compute`` rule.

    Its stable id is ``L{n_layer}-D{d_model}``, or ``L{n_layer}-D{d_model}-C{budget}`` (e.g.
    ``L4-D128-C1e15``, see :func:`compute_tag`) when the token budget comes from a compute
    budget, so the same shape trained at several budgets of an IsoFLOP grid keeps distinct ids.
    """

    n_layer: int
    d_model: int
    n_head: int
    compute: float | None = None

    @property
    def id(self) -> str:
        base = f"L{self.n_layer}-D{self.d_model}"
        return base if self.compute is None else f"{base}-C{compute_tag(self.compute)}"

    @property
    def n_params_approx(self) -> int:
        """12·n_layer·d_model², the non-embedding count of Kaplan et al. 2020 (eq. 2.1)."""
        return 12 * self.n_layer * self.d_model**2

    def n_params(self, mlp_ratio: int = 4) -> int:
        """Non-embedding parameters N of this shape's GPT (:func:`non_embedding_params`)."""
        return non_embedding_params(self.n_layer, self.d_model, mlp_ratio)


def non_embedding_params(n_layer: int, d_model: int, mlp_ratio: int = 4) -> int:
    """Non-embedding parameters ``N = L((4 + 2r)d² + 2d) + d`` of the GPT of :mod:`lmscaling.model`.

    Attention (4d²) and MLP (2rd²) weights and two norm gains per layer plus the final norm,
    no biases (Kaplan et al. 2020, sec. 2.1, without their neglect of the norms). Torch-free,
    so the config can be checked and the jobs ordered at parse time.
    """
    d = d_model
    return n_layer * ((4 + 2 * mlp_ratio) * d * d + 2 * d) + d


def training_flops_per_token(
    n: int, n_layer: int, context_length: int, d_model: int, vocab_size: int
) -> dict[str, float]:
    """Training FLOP per token (forward + backward = 3x forward) of a GPT with ``N = n``.

    Returns ``{"6N"`` (Kaplan et al. 2020, eq. 2.1), ``"6N_attention": 6N + 6 L T d`` (their
    Table 1: forward attention ``2 L T d``, x3 for the backward pass), ``"exact"``: that plus
    the LM head ``6 V d``, the count MFU uses``}``. Torch-free, like
    :func:`non_embedding_params`.
    """
    attention = 6.0 * n_layer * context_length * d_model
    head = 6.0 * vocab_size * d_model
    return {"6N": 6.0 * n, "6N_attention": 6.0 * n + attention, "exact": 6.0 * n + attention + head}


def sorted_keys(value):
    """``value`` with the keys of every mapping in it sorted (lists keep their order).

    Snakemake compares a job's params by their ``repr``, which follows key order; the workflow
    sorts the config's mappings so that the same config written in another order (e.g. by a
    tool's ``yaml.dump``) reruns nothing.
    """
    if isinstance(value, dict):
        return {k: sorted_keys(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [sorted_keys(v) for v in value]
    return value


def check_name(name: str, key: str) -> str:
    """Return ``name`` if it is safe as a path component and wildcard value.

    Raises:
        ConfigError: naming ``key`` when it is not.
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise ConfigError(
            f"{key}: name {name!r} must match {NAME_RE.pattern} (letters, digits, '.', '_', '-')"
        )
    return name


RESERVED_NAMES = {
    "corpora": ("manifest.json",),  # beside results/tokens/{tokenizer}/manifest.json
    "tokenizers": ("points.parquet", "points.csv"),  # beside results/eval/points.{parquet,csv}
}
"""Names that would make a directory of the output layout collide with a fixed file there."""


def _check_names(section: dict, key: str) -> None:
    """Check every name of ``config[key]``: safe, not reserved, unique ignoring case.

    Names that differ only in case would share their directories on a case-insensitive file
    system (macOS, Windows), so they are refused everywhere.
    """
    seen: dict[str, str] = {}
    for name in section:
        check_name(name, f"{key}.{name}")
        if name in RESERVED_NAMES.get(key, ()):
            raise ConfigError(f"{key}.{name}: the name {name!r} is reserved by the output layout")
        other = seen.setdefault(name.lower(), name)
        if other != name:
            raise ConfigError(f"{key}.{name}: differs from {key}.{other} only in letter case")


def compute_tag(compute: float) -> str:
    """Compact, path-safe spelling of a FLOP budget: ``1e15 -> "1e15"``, ``3.5e17 -> "3.5e17"``.

    Three significant digits; budgets that differ only beyond them get the same tag (and
    :func:`model_grid` then reports a repeated model id).
    """
    mantissa, exponent = f"{float(compute):.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _shape_entries(models: dict) -> list[tuple[str, dict]]:
    """``(key, {n_layer, d_model, n_head})`` per grid point, from ``grid`` or ``ladder``."""
    has_grid, has_ladder = models.get("grid") is not None, models.get("ladder") is not None
    if has_grid == has_ladder:
        raise ConfigError(
            "models: give exactly one of models.grid (explicit shapes) or models.ladder "
            "(depths with an aspect ratio)"
        )
    if has_grid:
        return [(f"models.grid[{i}]", entry) for i, entry in enumerate(models["grid"])]
    ladder = models["ladder"]
    entries = []
    for i, depth in enumerate(ladder["depths"]):
        d_model = int(depth) * int(ladder["aspect_ratio"])
        head_dim = int(ladder["head_dim"])
        if d_model % head_dim:
            raise ConfigError(
                f"models.ladder.depths[{i}]: d_model = {depth} x aspect_ratio "
                f"{ladder['aspect_ratio']} = {d_model} is not a multiple of head_dim {head_dim}"
            )
        entry = {"n_layer": int(depth), "d_model": d_model, "n_head": d_model // head_dim}
        entries.append((f"models.ladder.depths[{i}]", entry))
    return entries


def model_grid(config: dict) -> list[ModelShape]:
    """The grid points of ``config["models"]``, checked, in config order.

    Shapes come from ``models.grid`` (a list of ``{n_layer, d_model, n_head}``) or from
    ``models.ladder`` (``d_model = depth * aspect_ratio``, ``n_head = d_model / head_dim``, the
    depth-ladder parameterisation of nanochat). Under the ``train.compute`` budget rule every
    shape is repeated once per budget (an IsoFLOP grid: several sizes per C), budget-major.

    Raises:
        ConfigError: both or neither of grid and ladder, a head count that does not divide
            ``d_model``, an odd head dimension with rotary embeddings (they rotate pairs), or two
            grid points with the same id.
    """
    rotary = config["models"].get("position", "rope") == "rope"
    budgets = config.get("train", {}).get("compute") or [None]
    shapes, seen = [], {}
    for budget in budgets:
        for key, entry in _shape_entries(config["models"]):
            shape = ModelShape(
                int(entry["n_layer"]),
                int(entry["d_model"]),
                int(entry["n_head"]),
                None if budget is None else float(budget),
            )
            if shape.d_model % shape.n_head:
                raise ConfigError(
                    f"{key}: d_model ({shape.d_model}) is not divisible by n_head ({shape.n_head})"
                )
            if rotary and (shape.d_model // shape.n_head) % 2:
                where = "models.ladder.head_dim" if "ladder" in key else key
                raise ConfigError(
                    f"{where}: head dimension d_model/n_head = {shape.d_model // shape.n_head} "
                    "must be even (rotary position embeddings)"
                )
            if shape.id in seen:
                earlier_key, earlier_budget = seen[shape.id]
                if earlier_budget != shape.compute:
                    raise ConfigError(
                        f"train.compute: budgets {earlier_budget:g} and {shape.compute:g} both "
                        f"give model id {shape.id} (ids keep 3 significant digits of C); "
                        "space the budgets further apart"
                    )
                raise ConfigError(f"{key}: model id {shape.id} repeats {earlier_key}")
            seen[shape.id] = (key, shape.compute)
            shapes.append(shape)
    return shapes


def check_config(config: dict) -> None:
    """Cross-field checks on a schema-valid config.

    Raises:
        ConfigError: naming the key, for unsafe, reserved or case-clashing names, a bad grid, a
            missing or double token budget, a budget below one token or a batch size that the
            micro-batch does not divide (for some model), repeated checkpoint names, or a
            vocabulary too small for its special tokens or whose ids do not fit the token dtype.
    """
    _check_names(config["corpora"], "corpora")
    _check_names(config["tokenizers"], "tokenizers")
    for name, spec in config["tokenizers"].items():
        if spec["vocab_size"] > 2**32:
            raise ConfigError(f"tokenizers.{name}.vocab_size: ids must fit uint32")
        # 256 byte symbols, end-of-text, and <|bos|> / <|pad|> when enabled.
        minimum = 257 + bool(spec.get("bos")) + bool(spec.get("pad"))
        if spec["vocab_size"] < minimum:
            raise ConfigError(
                f"tokenizers.{name}.vocab_size: {spec['vocab_size']} is below {minimum}, the "
                "256 byte symbols plus the special tokens"
            )
    check_name(config["experiment_name"], "experiment_name")
    train = config["train"]
    rules = [k for k in BUDGET_RULES if train.get(k) is not None]
    if len(rules) != 1:
        raise ConfigError(
            "train: give exactly one token budget rule, train.tokens (fixed D), "
            "train.tokens_per_parameter (D = r·N) or train.compute (D = C / 6N); "
            f"got {rules or 'none'}"
        )
    shapes = model_grid(config)
    for key in ("lr", "batch_size"):
        _check_scale_rule(train.get(key), f"train.{key}")
    micro = train.get("micro_batch_size") or 0
    # DDP ranks per model: each rank runs batch / gpus sequences per step (lmscaling.train)
    gpus = 1 if train.get("device") == "cpu" else max(1, train.get("gpus") or 1)
    mlp_ratio = config["models"].get("mlp_ratio", 4)
    for shape in shapes:
        n = shape.n_params(mlp_ratio)
        try:
            batch = train_settings(train, n, shape.compute)["batch_size"]
        except ConfigError as err:
            raise ConfigError(f"{err} (model {shape.id})") from None
        if batch % (max(micro, 1) * gpus):
            if micro:
                what = f"train.micro_batch_size: {micro}" + (
                    f" x train.gpus {gpus}" if gpus > 1 else ""
                )
            else:
                what = f"train.gpus: {gpus}"
            raise ConfigError(f"{what} does not divide the batch size {batch} of model {shape.id}")
        # Training runs whole optimizer steps: a budget under one step would be silently
        # raised to a step, and C with it.
        d, step = token_budget(train, n, shape.compute), batch * config["models"]["context_length"]
        if d < step:
            raise ConfigError(
                f"train.{rules[0]}: model {shape.id} gets D = {d} tokens, less than one "
                f"optimizer step (batch_size {batch} x models.context_length "
                f"{config['models']['context_length']} = {step} tokens)"
            )
    if train.get("schedule") == "wsd" and (
        train.get("warmup_fraction", 0) + train.get("decay_fraction", 0) > 1
    ):
        raise ConfigError(
            f"train.decay_fraction: warmup ({train['warmup_fraction']}) and decay "
            f"({train['decay_fraction']}) of the WSD schedule add up to more than all the steps"
        )
    fractions = train.get("checkpoint_fractions") or []
    names = [checkpoint_name(f) for f in fractions]
    if len(set(names)) != len(names) or any(not 0 < f < 1 for f in fractions):
        raise ConfigError(
            "train.checkpoint_fractions: must be numbers in (0, 1) with distinct checkpoint "
            f"names, got {fractions} -> {names}"
        )


BUDGET_RULES = ("tokens", "tokens_per_parameter", "compute")


def checkpoint_name(fraction: float) -> str:
    """Name of the intermediate checkpoint at a fraction of the token budget: ``"frac-0.5"``.

    The fraction is spelled with ``format(fraction, "g")`` (``0.25 -> "frac-0.25"``).
    """
    return f"frac-{format(fraction, 'g')}"


def token_budget(train: dict, n_params: int, compute: float | None = None) -> int:
    """Training tokens D for a model of ``n_params`` non-embedding parameters.

    ``train.tokens`` fixes D for every model; ``train.tokens_per_parameter`` gives D = r·N
    (r ≈ 20 is compute-optimal per Hoffmann et al. 2022, Table 3); ``train.compute`` (a list of
    FLOP budgets, one per IsoFLOP curve) gives D = C / (6N) for the grid point's own budget
    ``compute`` (C ≈ 6ND, Kaplan et al. 2020, eq. 2.1; Hoffmann et al. 2022, sec. 3.2).

    Raises:
        ConfigError: under the compute rule when ``compute`` is not given.
    """
    if train.get("tokens") is not None:
        return int(train["tokens"])
    if train.get("tokens_per_parameter") is not None:
        return int(round(float(train["tokens_per_parameter"]) * n_params))
    if compute is None:
        raise ConfigError("train.compute: the grid point has no compute budget")
    return int(round(float(compute) / (6.0 * n_params)))


def training_flop(shape: ModelShape, config: dict, vocab_size: int) -> float:
    """Estimated training compute of one grid point, in FLOP (the workflow's job priority).

    ``training_flops_per_token(...)["exact"] * D``: ``6N + 6 L T d + 6 V d`` per token, with
    ``T`` = ``models.context_length``, ``V`` = ``vocab_size`` and ``D`` from
    :func:`token_budget`.
    """
    models = config["models"]
    n = shape.n_params(models.get("mlp_ratio", 4))
    per_token = training_flops_per_token(
        n, shape.n_layer, models["context_length"], shape.d_model, vocab_size
    )["exact"]
    return per_token * token_budget(config["train"], n, shape.compute)


def optimizer_steps(tokens: int, batch_size: int, context_length: int) -> int:
    """Optimizer steps of a run of ``tokens`` tokens: ``ceil(tokens / (batch_size *
    context_length))``; it sees ``D = steps * batch_size * context_length`` tokens."""
    return math.ceil(tokens / (batch_size * context_length))


def checkpoint_steps(fractions, total_steps: int) -> dict[float, int]:
    """``{fraction: step}``: the checkpoint of fraction ``f`` is written after step
    ``ceil(f * total_steps)`` (clipped to ``[1, total_steps]``), when at least ``f * D`` tokens
    have been seen."""
    return {f: min(total_steps, max(1, math.ceil(f * total_steps))) for f in fractions}


def planned_runs(config: dict) -> list[tuple[ModelShape, dict, int]]:
    """``(shape, settings, steps)`` of every grid point: its :func:`train_settings` (``tokens``
    = the budget D, ``lr``, ``batch_size``) and its whole optimizer steps
    (:func:`optimizer_steps`), as training will run them."""
    train, models = config["train"], config["models"]
    runs = []
    for shape in model_grid(config):
        settings = train_settings(train, shape.n_params(models.get("mlp_ratio", 4)), shape.compute)
        steps = optimizer_steps(
            settings["tokens"], settings["batch_size"], models["context_length"]
        )
        runs.append((shape, settings, steps))
    return runs


def checkpoint_warnings(config: dict) -> list[str]:
    """Models whose ``train.checkpoint_fractions`` collapse: two fractions on one optimizer
    step (the same model twice in the points table), a fraction on the last step (the final
    model again), or a fraction rounded up to a step more than 10% past it (its D is right,
    its name is not). One message naming the first such model and how many there are."""
    fractions = sorted(config["train"].get("checkpoint_fractions") or [])
    if not fractions:
        return []
    hit = []
    for shape, _, total in planned_runs(config):
        steps = checkpoint_steps(fractions, total)
        same = [f for f, g in zip(fractions, fractions[1:], strict=False) if steps[f] == steps[g]]
        last = [f for f in fractions if steps[f] == total]
        # rounded up to a whole step, a checkpoint lands well after its fraction of D
        late = [f for f in fractions if f not in same + last and steps[f] / total > 1.1 * f]
        if same or last or late:
            hit.append((shape.id, total, same, last, late, steps))
    if not hit:
        return []
    model, total, same, last, late, steps = hit[0]
    what = [f"{checkpoint_name(f)} falls on the step of the next fraction" for f in same]
    what += [f"{checkpoint_name(f)} on the last step (the final model)" for f in last]
    what += [
        f"{checkpoint_name(f)} after step {steps[f]}, at {steps[f] / total:.3g} of D" for f in late
    ]
    return [
        f"train.checkpoint_fractions: model {model} trains only {total} optimizer steps: "
        f"{'; '.join(what)}; these checkpoints repeat a point or miss their fraction "
        f"({len(hit)} model(s) so)"
    ]


def rounding_warnings(config: dict, tolerance: float = 0.1) -> list[str]:
    """Models whose run overshoots its token budget by more than ``tolerance`` (relative).

    A run takes whole optimizer steps (:func:`optimizer_steps`), so it sees up to one step
    (``batch_size x context_length`` tokens) more than its budget D, and its C = 6ND grows with
    it. On an IsoFLOP grid that moves a model off its budget's curve. One message naming the
    worst such model and how many there are.
    """
    train = config["train"]
    rule = next(k for k in BUDGET_RULES if train.get(k) is not None)
    hit = []
    for shape, settings, total in planned_runs(config):
        step = settings["batch_size"] * config["models"]["context_length"]
        seen = total * step
        ratio = seen / settings["tokens"]
        if ratio > 1 + tolerance:
            hit.append((ratio, shape.id, settings["tokens"], seen, step))
    if not hit:
        return []
    ratio, model, budget, seen, step = max(hit)
    return [
        f"train.{rule}: {len(hit)} model(s) train on more than {tolerance:.0%} above their "
        f"token budget, rounded up to whole optimizer steps of {step} tokens (batch_size x "
        f"models.context_length); worst: {model}, D = {seen} for a budget of {budget} "
        f"({ratio:.2f}x, and C with it). Lower train.batch_size or raise the budget."
    ]


def fit_plan_warnings(config: dict) -> list[str]:
    """What the configured grid will not let the fit job do, known before any job runs.

    The axes of ``fit.axes`` on which every grid point has the same value are listed when no
    axis is left to fit (one model, or ``axes: [D]`` with a fixed D): the workflow still trains
    and evaluates, and the fit job explains why it has no law, but a user should hear it
    before the training. C counts as one value when the grid has one compute budget (its
    runs differ in C only by the rounding of their step counts). An empty list when at least
    one power law can be fitted.
    """
    shapes = model_grid(config)
    train, mlp_ratio = config["train"], config["models"].get("mlp_ratio", 4)
    values: dict[str, list[float]] = {"N": [], "D": [], "C": []}
    for shape in shapes:
        n = shape.n_params(mlp_ratio)
        d = token_budget(train, n, shape.compute)
        values["N"].append(n)
        values["D"].append(d)
        values["C"].append(6 * n * d if shape.compute is None else shape.compute)
    axes = list(config["fit"].get("axes") or values)
    if any(len(set(values[axis])) > 1 for axis in axes):
        return []
    return [
        f"fit.axes {axes}: every model of the grid has the same {', '.join(axes)} "
        f"({len(shapes)} model(s)), so no scaling law can be fitted; the fit job will plot "
        "the points only. Add model sizes (models.grid / models.ladder) or fit another axis."
    ]


def _check_scale_rule(rule, key: str) -> None:
    if not isinstance(rule, dict):
        return
    if "table" in rule:
        limits = [row["max_N"] for row in rule["table"]]
        if not limits or limits[-1] is not None:
            raise ConfigError(f"{key}.table: the last row must have max_N: null (no limit)")
        bounded = limits[:-1]
        if None in bounded or any(b <= a for a, b in itertools.pairwise(bounded)):
            raise ConfigError(f"{key}.table: max_N must increase, with null only in the last row")


def scale_rule(rule, n_params: int, key: str) -> float:
    """A hyper-parameter by model size: a number, a size table or a power law in N.

    Forms (``n_params`` = N, non-embedding parameters):

    - a number: the same value at every size;
    - ``{"table": [{"max_N": 1e6, "value": v1}, ..., {"max_N": None, "value": vk}]}``: the value
      of the first row with ``N <= max_N`` (the last row, ``max_N: null``, catches the rest);
    - ``{"power_law": {"value": v, "N_ref": n0, "exponent": a}}``: ``v * (N / n0) ** a``, e.g. a
      learning rate falling with size (Kaplan et al. 2020, eq. D.1, ``LR(N) ∝ N^-0.25`` roughly)
      or a batch size growing with it (DeepSeek-AI 2024, sec. 3.1).

    Raises:
        ConfigError: naming ``key`` for a malformed rule.
    """
    if isinstance(rule, bool) or rule is None:
        raise ConfigError(f"{key}: expected a number, a table or a power_law, got {rule!r}")
    if isinstance(rule, int | float):
        return rule
    _check_scale_rule(rule, key)
    if "table" in rule:
        for row in rule["table"]:
            if row["max_N"] is None or n_params <= row["max_N"]:
                return row["value"]
    if "power_law" in rule:
        law = rule["power_law"]
        try:
            value = float(law["value"]) * (n_params / float(law["N_ref"])) ** float(law["exponent"])
        except (OverflowError, ZeroDivisionError):
            value = math.inf
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(
                f"{key}.power_law: gives {value:g} at N = {n_params}; the value must be a "
                "finite number above 0"
            )
        return value
    raise ConfigError(f"{key}: expected a number, a table or a power_law, got {rule!r}")


def train_settings(train: dict, n_params: int, compute: float | None = None) -> dict:
    """The size-dependent training settings of one model: ``tokens``, ``lr``, ``batch_size``.

    ``lr`` and ``batch_size`` follow :func:`scale_rule`; a batch size from a power law is
    rounded to the nearest power of two (so it splits evenly into micro-batches and GPUs), one
    from a table or a number is used as given.

    Raises:
        ConfigError: naming the key, for a malformed rule or a budget below one token.
    """
    batch_rule = train["batch_size"]
    batch = scale_rule(batch_rule, n_params, "train.batch_size")
    if isinstance(batch_rule, dict) and "power_law" in batch_rule:
        exponent = round(math.log2(batch))
        if exponent < 0:  # nearest power of two below one sequence
            raise ConfigError(
                f"train.batch_size.power_law: {batch:.3g} sequences at N = {n_params}, fewer "
                "than one; raise its value"
            )
        batch = 2**exponent
    if int(batch) != batch or batch < 1:
        raise ConfigError(f"train.batch_size: {batch!r} at N = {n_params} is not an integer >= 1")
    tokens = token_budget(train, n_params, compute)
    if tokens < 1:
        rule = next(k for k in BUDGET_RULES if train.get(k) is not None)
        raise ConfigError(f"train.{rule}: token budget at N = {n_params} is {tokens} (< 1 token)")
    lr = float(scale_rule(train["lr"], n_params, "train.lr"))
    return {"tokens": tokens, "lr": lr, "batch_size": int(batch)}
