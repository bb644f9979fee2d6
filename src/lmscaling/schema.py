"""Parse-time validation of the experiment configuration against its JSON schema.

Used by the workflow driver only (``workflow/rules/common.smk``), before any job: jobs never
import this module, so their environments need neither jsonschema nor PyYAML. The schema file
is ``workflow/schemas/config.schema.yaml``; the cross-field rules are
:func:`lmscaling.config.check_config`.
"""

from __future__ import annotations

import math
import os

import jsonschema
import yaml

from lmscaling.config import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader refusing a key repeated in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        """The mapping of ``node``, as PyYAML builds it.

        Raises:
            ConfigError: naming the file and both lines when a key repeats.
        """
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # a complex key (a list): the schema refuses it by name
            if key in seen:
                raise ConfigError(
                    f"{self.name}:{key_node.start_mark.line + 1}: key {key!r} repeats the key of "
                    f"line {seen[key] + 1} in the same mapping (YAML would keep only the last)"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def check_unique_keys(path: str | os.PathLike[str]) -> None:
    """Read the YAML file ``path`` and refuse a key given twice in one mapping.

    Raises:
        ConfigError: naming the file, the line and the key.
    """
    with open(path, encoding="utf-8") as fh:
        loader = _UniqueKeyLoader(fh)
        loader.name = str(path)
        try:
            loader.get_single_data()
        except yaml.YAMLError:
            pass  # Snakemake has read the file already; its own message covers syntax errors
        finally:
            loader.dispose()


def _dotted(path) -> str:
    """``["models", "grid", 0, "n_head"]`` -> ``"models.grid[0].n_head"``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _check_finite(value, path: list) -> None:
    """Refuse NaN and infinities anywhere in ``value`` (a JSON schema range check passes NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{_dotted(path) or 'config'}: {value} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, [*path, k])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, [*path, i])


def _is_integer(checker, instance) -> bool:
    """JSON Schema's ``integer`` without the floats it admits (``2.0``): those are converted to
    ``int`` by :func:`validate_schema` where the key wants an integer, so that no job sees one."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def _types(branch: dict, schema: dict) -> set[str]:
    """JSON types a schema branch accepts: its ``type``, through a local ``$ref`` and ``oneOf``."""
    if "$ref" in branch:
        target = schema
        for part in branch["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        branch = target
    if "type" in branch:
        return {branch["type"]} if isinstance(branch["type"], str) else set(branch["type"])
    return {
        t for sub in branch.get("oneOf", []) + branch.get("anyOf", []) for t in _types(sub, schema)
    }


def _closest(err, schema: dict):
    """Among the errors of a oneOf/anyOf's alternatives, those of the alternative(s) declaring
    the value's type (the mapping form for a mapping), best first; None when no alternative
    takes that type (the oneOf's own message says it best)."""
    checker = _Validator.TYPE_CHECKER

    def fits(sub) -> bool:
        branch = err.validator_value[sub.relative_schema_path[0]]
        return any(checker.is_type(err.instance, t) for t in _types(branch, schema))

    fitting = [e for e in err.context if fits(e)]
    return jsonschema.exceptions.best_match(fitting) if fitting else None


def _wanted_types(err, schema: dict) -> set[str]:
    """The JSON types the failed keyword accepted (``type``, or the union of a oneOf's)."""
    if err.validator == "type":
        value = err.validator_value
        return {value} if isinstance(value, str) else set(value)
    if err.validator in ("oneOf", "anyOf"):
        return {t for branch in err.validator_value for t in _types(branch, schema)}
    return set()


def _yaml11_number(err, schema: dict) -> bool:
    """A number refused as a string because YAML 1.1 (PyYAML, hence Snakemake) reads ``1e9``
    or ``2e+4`` as text: it needs a point in the mantissa and a sign in the exponent."""
    if not isinstance(err.instance, str) or not {"number", "integer"} & _wanted_types(err, schema):
        return False
    try:
        return math.isfinite(float(err.instance))
    except ValueError:
        return False


def _yaml11_boolean(err, schema: dict) -> bool:
    """A boolean refused where text was wanted: YAML 1.1 reads an unquoted ``yes``, ``no``,
    ``on`` or ``off`` as true or false."""
    if not isinstance(err.instance, bool):
        return False
    if err.validator == "enum":
        return any(isinstance(value, str) for value in err.validator_value)
    return "string" in _wanted_types(err, schema)


def _number_hint(text: str, wanted) -> str:
    """How to write the number that the string ``text`` holds (see :func:`_yaml11_number`)."""
    if "e" not in text.lower():
        return f" (a number in quotes is text: write {text.strip()} without them)"
    return (
        f" (YAML reads {text} as text, not a number: write {_yaml11_spelling(float(text), wanted)})"
    )


def _yaml11_spelling(value: float, wanted) -> str:
    """``value`` as YAML 1.1 reads a number: ``20000`` for an integer key, else ``1.5e+09``."""
    if "number" not in wanted and value.is_integer():
        return str(int(value))
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0")
    return f"{mantissa}0e{exponent}" if mantissa.endswith(".") else f"{mantissa}e{exponent}"


def _one_of_keys(branch: dict) -> bool:
    """Whether a mapping's schema takes exactly one of its keys (min = max properties = 1)."""
    return branch.get("minProperties") == branch.get("maxProperties") == 1


def _errors(config: dict, schema: dict):
    """The schema violations of ``config``; for a key with alternative forms (oneOf/anyOf), the
    problem with the alternative of the value's type."""
    for err in _Validator(schema).iter_errors(config):
        while err.context and (closer := _closest(err, schema)) is not None:
            err = closer
        yield err


def _integral_floats_to_int(config: dict, schema: dict) -> None:
    """Replace, in place, every integer-valued float where the schema wants an integer
    (``tokens: 2.0e+6``, ``log_every: 2.0``) by the ``int``: JSON Schema counts such a float as
    an integer, but the jobs' integer checks and ``range`` refuse it."""
    for err in list(_errors(config, schema)):
        value = err.instance
        if not (isinstance(value, float) and value.is_integer()):
            continue
        if "integer" not in _wanted_types(err, schema):
            continue
        *parents, last = err.absolute_path
        holder = config
        for part in parents:
            holder = holder[part]
        holder[last] = int(value)


def validate_schema(config: dict, schema_path: str | os.PathLike[str]) -> None:
    """Check ``config`` against the JSON schema at ``schema_path`` (YAML, draft 2020-12).

    Every violation is reported on its own line as ``<key path>: <problem>``, e.g.
    ``corpora.web.min_chr: unknown key (allowed: ...)`` or ``data.num_shards: 0 is less than
    the minimum of 1``; for a key with alternative forms, the problem with the form of the
    value's type. NaN and infinite numbers are refused anywhere. An integer-valued float where
    the schema wants an integer (``2.0``, ``1.0e+6``) is first replaced by the ``int`` in
    ``config`` (``2.5`` is refused).

    Raises:
        ConfigError: naming every offending key (dotted path, list indices in brackets).
    """
    _check_finite(config, [])
    with open(schema_path, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    _integral_floats_to_int(config, schema)
    problems = []
    for err in _errors(config, schema):
        path = list(err.absolute_path)
        if err.validator == "additionalProperties" and err.validator_value is False:
            allowed = ", ".join(sorted(err.schema.get("properties", {})))
            for extra in sorted(set(err.instance) - set(err.schema.get("properties", {}))):
                problems.append(f"{_dotted([*path, extra])}: unknown key (allowed: {allowed})")
        elif err.validator in ("minProperties", "maxProperties") and _one_of_keys(err.schema):
            keys = ", ".join(sorted(err.schema["properties"]))
            problems.append(f"{_dotted(path) or 'config'}: needs exactly one of the keys {keys}")
        elif err.validator == "required":
            for missing in err.validator_value:
                if missing not in err.instance:
                    problems.append(f"{_dotted([*path, missing])}: required key is missing")
        else:
            message = err.message if len(err.message) <= 200 else err.message[:200] + "..."
            if _yaml11_number(err, schema):
                message += _number_hint(err.instance, _wanted_types(err, schema))
            elif _yaml11_boolean(err, schema):
                message += (
                    " (YAML reads an unquoted yes, no, on or off as a boolean: write text in "
                    "quotes)"
                )
            problems.append(f"{_dotted(path) or 'config'}: {message}")
    if problems:
        raise ConfigError("\n".join(sorted(set(problems))))
