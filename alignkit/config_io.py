"""The machinery under :mod:`alignkit.config`, which re-exports what callers use (import from there): the error
type; strict field types that still parse ``-p key=value`` strings; the :class:`Settings` base (frozen, unknown keys
refused, pydantic's ValidationError translated into one :class:`ConfigError` line naming the dotted key); reading
presets, YAML files and overrides, layering them, dumping and hashing.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Strict,
    Tag,
    ValidationError,
)


class ConfigError(ValueError):
    """A configuration problem; the message names the key, what was expected and what was given."""


# Shown, raised and pickled as the public name users import (alignkit.config re-exports it).
ConfigError.__module__ = "alignkit.config"


# --------------------------------------------------------------------------------------------------
# Field types: strict (no bool for an int, no number for a string), but ``-p`` strings are parsed
# --------------------------------------------------------------------------------------------------


def _parsed(convert: Any) -> Any:
    """A before-validator applying ``convert`` to strings (``-p`` values); what it cannot convert is left for the
    strict type to refuse, so the message shows what came."""
    def parse(value: Any) -> Any:
        if isinstance(value, str):
            try:
                return convert(value)
            except (ValueError, yaml.YAMLError):
                return value
        return value
    return BeforeValidator(parse)


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(text)
    return text.lower() in ("true", "1", "yes")


def _list(text: str) -> Any:
    """``[a, b]`` (YAML) or ``a,b``."""
    return yaml.safe_load(text) if text.strip().startswith("[") else [v for v in text.split(",") if v]


Int = Annotated[int, Strict(), _parsed(int)]
Float = Annotated[float, Strict(), _parsed(float)]
Bool = Annotated[bool, Strict(), _parsed(_bool)]
Str = Annotated[str, Strict()]
Strs = Annotated[tuple[Str, ...], _parsed(_list)]
Ints = Annotated[tuple[Int, ...], _parsed(_list)]

_S = TypeVar("_S", bound="Settings")


class Settings(BaseModel):
    """Frozen, unknown keys refused, every problem a :class:`ConfigError` naming the dotted key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: This section's key in :class:`StudyConfig` ("" for the whole config): the prefix of keys in messages.
    _section: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise _config_error(error, type(self)) from None

    # Not a custom init for pydantic: nested sections are validated by pydantic itself, so errors keep full paths.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def replace(self: _S, **changes: Any) -> _S:
        """A validated copy with ``changes`` applied: ``dataclasses.replace(cfg, seed=1)`` -> ``cfg.replace(seed=1)``
        (``model_copy(update=...)`` would skip validation)."""
        return type(self)(**{**{name: getattr(self, name) for name in type(self).model_fields}, **changes})

    def _key(self, name: str) -> str:
        return f"{self._section}.{name}" if self._section else name

    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(f"{self._key(name)}: expected a positive number; got {value!r}")

    def _require(self, name: str, ok: bool, wanted: str) -> None:
        if not ok:
            raise ConfigError(f"{self._key(name)}: expected {wanted}; got {getattr(self, name)}")


def _bare(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) is Union or isinstance(tp, types.UnionType)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tag(tp: Any) -> Any:
    return next((m.tag for m in getattr(tp, "__metadata__", ()) if isinstance(m, Tag)), None)


def _type_name(tp: Any, short: bool = False) -> str:
    """How messages (``short``: :func:`describe_keys`) name a field's type: ``an integer`` / ``int``."""
    tp = _bare(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "|".join(args) if short else "one of " + ", ".join(repr(a) for a in args)
    if _is_union(tp):
        return " or ".join(_type_name(member, short) for member in args)
    if origin in (tuple, list):
        return f"list[{_type_name(args[0], short)}]" if short else f"a list of {_type_name(args[0])}"
    if origin is dict or _is_model(tp):
        return "mapping" if short else "a mapping"
    if short:
        return getattr(tp, "__name__", str(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _locate(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, Any, Any]:
    """Pydantic's error location -> (dotted key, the type expected there, the model holding the last key)."""
    key, tp, owner = getattr(root, "_section", ""), root, root
    for index, part in enumerate(loc):
        tp = _bare(tp)
        if _is_union(tp):  # a tagged member: describe the union, unless the error is inside the member
            member = next((m for m in typing.get_args(tp) if _tag(m) == part), None)
            if member is not None:
                tp = member if index < len(loc) - 1 else tp
                continue
        if _is_model(tp):
            owner, field = tp, tp.model_fields.get(part)
            tp = field.annotation if field is not None else None
        elif typing.get_origin(tp) in (tuple, list) and isinstance(part, int):
            key, tp = f"{key}[{part}]", typing.get_args(tp)[0]
            continue
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            tp = None
        key = f"{key}.{part}" if key else str(part)
    return key, tp, owner


def _config_error(error: ValidationError, root: type[BaseModel]) -> ConfigError:
    """One line for the first problem: an unknown key (the shallowest), else a wrong type, else a broken rule (as
    the checks ran before: types first); the line names the key, what was expected and what came."""
    def rank(detail: dict[str, Any]) -> tuple[int, int]:
        if detail["type"] == "extra_forbidden":
            return 0, len(detail["loc"])
        return (2 if isinstance(detail.get("ctx", {}).get("error"), ConfigError) else 1), 0

    detail = min(error.errors(include_url=False), key=rank)
    rule = detail.get("ctx", {}).get("error")
    if isinstance(rule, ConfigError):  # a validator's own message, which names its keys
        return ConfigError(str(rule))
    key, tp, owner = _locate(root, tuple(detail["loc"]))
    if detail["type"] == "extra_forbidden":
        prefix = key.rpartition(".")[0] + "." if "." in key else ""
        return ConfigError(f"unknown config key {key!r}; known keys: "
                           + ", ".join(prefix + name for name in sorted(owner.model_fields)))
    return ConfigError(f"{key or 'config'}: expected {_type_name(tp)}; got {detail.get('input')!r}")


def build(cls: type[_S], data: Any) -> _S:
    """Construct config model ``cls`` from a nested dict, rejecting unknown keys and wrong types by name.

    >>> from alignkit.config import PairsSettings, StudyConfig
    >>> build(PairsSettings, {"min_pairs": "600"}).min_pairs
    600
    >>> build(StudyConfig, {"pairs": {"min_pair": 600}})
    Traceback (most recent call last):
    ...
    alignkit.config.ConfigError: unknown config key 'pairs.min_pair'; known keys: pairs.batch_size, pairs.max_length, pairs.min_pairs
    """
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        raise _config_error(error, cls) from None


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return (value or "''") if isinstance(value, str) else str(value)


def describe_keys(root: type[BaseModel]) -> str:
    """``section.key  (type, default)  help`` for every key of ``root``, one per line (sections expanded)."""
    rows = []
    for name, field in root.model_fields.items():
        if _is_model(field.annotation):
            rows += [(f"{name}.{key}", sub) for key, sub in field.annotation.model_fields.items()]
        else:
            rows.append((name, field))
    width = max(len(key) for key, _field in rows)
    return "\n".join(f"{key:<{width}}  ({_type_name(f.annotation, short=True)}, {_show(f.default)})  {f.description}"
                     for key, f in rows)


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able object (key order does not matter).

    >>> config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    True
    """
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``update`` over ``base`` (mappings merge, everything else replaces).

    >>> merge({"sft": {"epochs": 1, "batch_size": 8}}, {"sft": {"epochs": 2}})
    {'sft': {'epochs': 2, 'batch_size': 8}}
    """
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "mix":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(items: list[str] | str | None) -> dict[str, Any]:
    """Turn ``["sft.epochs=2", "seed=3"]`` (or one string of such items separated by newlines or ``;``)
    into a nested dict of strings; types are checked when the config is built.

    >>> parse_overrides("sft.epochs=2; seed=3")
    {'sft': {'epochs': '2'}, 'seed': '3'}
    """
    if items is None:
        return {}
    if isinstance(items, str):
        items = [part for line in items.splitlines() for part in line.split(";")]
    nested: dict[str, Any] = {}
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. sft.epochs=2")
        key, value = (part.strip() for part in item.split("=", 1))
        if not key:
            raise ConfigError(f"override {item!r}: empty key")
        target = nested
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {item!r}: {part!r} is set both as a value and as a section")
        target[parts[-1]] = value
    return nested


def available_presets() -> list[str]:
    """Names of the presets shipped in ``alignkit/presets``."""
    folder = resources.files("alignkit") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The raw dict of preset ``name``; unknown names list the available ones."""
    path = resources.files("alignkit") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset {name!r}: not found; available presets: {', '.join(available_presets())}")
    return _load_yaml_text(path.read_text(encoding="utf-8"), f"preset {name}")


def load_user_yaml(path: str | Path) -> dict[str, Any]:
    """A user's YAML config file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: file not found")
    return _load_yaml_text(path.read_text(encoding="utf-8"), str(path))


def _load_yaml_text(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{origin}{where}: invalid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of config sections; got {type(data).__name__}")
    return data


def layered(preset: str, config_file: str | Path | None = None,
            overrides: list[str] | str | None = None) -> dict[str, Any]:
    """The raw nested dict of preset < user YAML < overrides, before any type is checked."""
    layers = load_preset(preset)
    if layers.get("preset", preset) != preset:
        raise ConfigError(f"preset {preset!r}: its file sets preset={layers['preset']!r}")
    data = merge({"preset": preset}, layers)
    if config_file:
        data = merge(data, load_user_yaml(config_file))
    data = merge(data, parse_overrides(overrides))
    if data.get("preset", preset) != preset:
        raise ConfigError(f"preset: the config sets preset={data['preset']!r} but preset {preset!r} was loaded; "
                          f"choose the preset with --preset (or the papermill parameter), not as a config key")
    return data


def dump_yaml(cfg: Any) -> str:
    """The resolved config (a :class:`alignkit.config.StudyConfig`) as YAML, as ``alignkit config show`` prints
    it."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
