"""Typed dataclass configs, shared by the CLI and the Python API.

A config is a dataclass whose fields carry their help text (``opt(default, "help")``).
It is built from three layers, later ones winning: the field defaults, a YAML file
(``--config FILE``), and command-line options. Nested dataclasses give dotted options
(``--optim.lr 1e-3``) and nested YAML mappings. A numeric field declares its range
(``opt(30, "epochs", ge=1)``); :func:`from_dict` refuses a value set (YAML or command
line) outside it with one line naming the option, the value and the range.

Why not jsonargparse (the dependency first planned for this): it spells options with
underscores and wants a value after every boolean (``--skip_bad true``), while users type
``--skip-bad``; the bridge below is one generic function over the same typed dataclasses.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Collection
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from speechssl.errors import UserError

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def opt(
    default: Any = _MISSING,
    help: str = "",
    *,
    factory=None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
):
    """A config field with its help text and, for numbers, its allowed range.

    Args:
        default: the default value (none: a required option).
        help: one line for ``--help``.
        factory: makes the default (for mutable defaults).
        ge, gt, le, lt: bounds (>=, >, <=, <) that :func:`from_dict` checks for every value
            set (each item of a list); ``None`` passes, it means "off" where a field allows it.
    """
    meta: dict[str, Any] = {"help": help}
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if bounds:
        meta["bounds"] = bounds
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def bounds_text(bounds: dict[str, float]) -> str:
    """The range as a user reads it: ``>= 1``, ``> 0``, ``in [0, 1]``, ``in (0, 1]``."""
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = (
        ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    )
    if low and high:
        return f"in {low[0]}{_num(low[1])}, {_num(high[1])}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {_num(low[1])}"
    if high:
        return f"{'<=' if high[0] == ']' else '<'} {_num(high[1])}"
    return "any"


def in_bounds(value: float, bounds: dict[str, float]) -> bool:
    """Whether ``value`` lies in ``bounds`` (NaN never does)."""
    checks = {
        "ge": lambda b: value >= b,
        "gt": lambda b: value > b,
        "le": lambda b: value <= b,
        "lt": lambda b: value < b,
    }
    return all(checks[k](b) for k, b in bounds.items())


def check_bounds(value: Any, bounds: dict[str, float], option: str) -> None:
    """Raise one line naming ``option`` (``--train.lr``), the value and the range if out of it."""
    if value is None or not bounds:
        return
    items = value if isinstance(value, (list, tuple)) else [value]
    bad = [x for x in items if not in_bounds(x, bounds)]
    if bad:
        each = "each item " if isinstance(value, (list, tuple)) else ""
        raise UserError(
            f"{option} {_show(value)} is out of range: {each}must be {bounds_text(bounds)}"
        )


def option_name(dotted: str) -> str:
    """How a user spells a config field on the command line: ``train.max_steps`` ->
    ``--train.max-steps``."""
    return "--" + dotted.replace("_", "-")


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    prefix: str = "",
    defaults: Any = None,
    skip: Collection[str] = (),
) -> None:
    """Add one option per field of dataclass ``cls`` (recursively, dotted for nested ones).

    Defaults are suppressed in the namespace so that :func:`build` can tell what the user
    set from what is a default; the help still shows the defaults (those of ``defaults``,
    the instance a parent's default makes, for nested sections). Options required (no
    default) are listed in their own group. ``skip``: dotted fields (``train.batch_duration``)
    a command ignores, left out.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        if prefix + f.name in skip:
            continue
        if dataclasses.is_dataclass(typ):
            nested = default if dataclasses.is_dataclass(default) else None
            add_arguments(parser, typ, f"{prefix}{f.name}.", nested, skip)
            continue
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS}
        base, optional = _unwrap_optional(typ)
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(base) is Literal:
            kwargs["choices"] = list(get_args(base))
            kwargs["type"] = _parse_literal(get_args(base))
        elif get_origin(base) in (list, tuple):
            kwargs["type"] = _parse_list(get_args(base)[0] if get_args(base) else str)
            kwargs["metavar"] = "A,B,..."
        else:
            kwargs["type"] = _scalar_parser(base)
            kwargs["metavar"] = f.name.upper()
        if optional and "type" in kwargs:
            kwargs["type"] = _or_none(kwargs["type"])
        dest = prefix + f.name
        help_text = help_line(f, default, optional=optional and "type" in kwargs)
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        group = _required_group(parser) if default is _MISSING else parser
        group.add_argument(option_name(dest), dest=dest, help=help_text, **kwargs)


def help_line(f: dataclasses.Field, default: Any, optional: bool = False) -> str:
    """The ``--help`` line of a field: its help text, then one parenthesis of notes (default,
    range, how to turn it off, required), merged into a closing parenthesis the text ends with.
    Backquoted code is shown in plain quotes; a default the text already states, or an empty
    one, is not repeated."""
    text = plain_text(f.metadata.get("help", ""))
    notes = []
    shown = "" if default is _MISSING or default is None else _show(default)
    if default is _MISSING:
        notes.append("required")
    elif shown and "default:" not in text:
        notes.append(f"default: {shown}")
    if f.metadata.get("bounds"):
        notes.append(bounds_text(f.metadata["bounds"]))
    if optional and shown and "none" not in text.lower():
        notes.append("'none' to turn off")
    if not notes:
        return text
    if text.endswith(")"):
        return f"{text[:-1]}; {'; '.join(notes)})"
    return f"{text} ({'; '.join(notes)})".strip()


def plain_text(text: str) -> str:
    """Docstring or help markup as a terminal shows it: ``code`` and `code` in plain quotes,
    :class:`~pkg.Name` as Name."""
    text = re.sub(r":[a-z]+:`~?(?:[\w.]+\.)?([^`]+)`", r"\1", text)
    return re.sub(r"`+([^`]+)`+", r"'\1'", text).strip()


def _required_group(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The parser's "required options" group (made on first use), so --help shows them apart:
    they are not argparse-required, since ``--config FILE`` may set them."""
    if not hasattr(parser, "add_argument_group"):  # a stand-in that only adds arguments
        return parser
    group = getattr(parser, "_speechssl_required", None)
    if group is None:
        group = parser.add_argument_group("required options")
        parser._speechssl_required = group  # type: ignore[attr-defined]
    return group


def build(
    cls: type[T], cli: dict[str, Any] | None = None, yaml_file: str | Path | None = None
) -> T:
    """Make a ``cls`` from defaults, then ``yaml_file``, then ``cli`` (dotted keys)."""
    values: dict[str, Any] = {}
    if yaml_file is not None:
        path = resolve_config(yaml_file)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"config file {path} must hold a mapping of options")
        _merge(values, loaded)
    for key, value in (cli or {}).items():
        _merge(values, _undot(key, value))
    return from_dict(cls, values)


def shipped_configs() -> list[str]:
    """Names of the configs that ship with speechssl (``src/speechssl/configs/*.yaml``)."""
    folder = resources.files("speechssl") / "configs"
    if not folder.is_dir():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_config(name_or_path: str | Path) -> Path:
    """A YAML path, or the name of a shipped config (``mt4ssl-tiny``), as an existing file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = resources.files("speechssl") / "configs" / f"{name_or_path}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    names = ", ".join(shipped_configs()) or "none"
    raise UserError(f"config file not found: {path} (shipped configs: {names})")


def from_dict(cls: type[T], values: dict[str, Any], where: str = "", defaults: Any = None) -> T:
    """Build dataclass ``cls`` from a (nested) mapping, checking names and types.

    Fields not in ``values`` keep their defaults: those of ``defaults`` when given (a nested
    section starts from the instance its parent's default makes, so a parent can ship other
    defaults than the section's class), else the class's.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(
            f"unknown option {where}{unknown[0].replace('_', '-')!s} "
            f"(known: {', '.join(sorted(n.replace('_', '-') for n in names))})"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        name = where + f.name
        default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        if f.name in values:
            raw = values[f.name]
            if dataclasses.is_dataclass(typ):
                if not isinstance(raw, dict):
                    raise UserError(f"option {option_name(name)} must be a mapping")
                nested = default if dataclasses.is_dataclass(default) else None
                kwargs[f.name] = from_dict(typ, raw, where=name + ".", defaults=nested)
            else:
                kwargs[f.name] = _coerce(raw, typ, name)
                check_bounds(kwargs[f.name], f.metadata.get("bounds", {}), option_name(name))
        elif default is not _MISSING:
            kwargs[f.name] = default
        elif dataclasses.is_dataclass(typ):
            kwargs[f.name] = from_dict(typ, {}, where=name + ".")
        else:
            raise UserError(f"missing required option {option_name(name)}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A YAML-safe nested dict of a config (paths as strings)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def save_yaml(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def _unwrap_optional(typ: Any) -> tuple[Any, bool]:
    if get_origin(typ) in (Union, types.UnionType):
        args = [a for a in get_args(typ) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return typ, False


def _coerce(raw: Any, typ: Any, name: str) -> Any:
    base, optional = _unwrap_optional(typ)
    if raw is None:
        if optional:
            return None
        raise UserError(f"option {option_name(name)} may not be empty")
    try:
        if base is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "yes", "1", "on"):
                return True
            if str(raw).lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError(raw)
        if get_origin(base) is Literal:
            return _parse_literal(get_args(base))(raw)
        if get_origin(base) in (list, tuple):
            item = get_args(base)[0] if get_args(base) else str
            items = raw if isinstance(raw, (list, tuple)) else _parse_list(str)(str(raw))
            out = [_coerce(x, item, name) for x in items]
            return tuple(out) if get_origin(base) is tuple else out
        return _scalar_parser(base)(raw)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise UserError(
            f"option {option_name(name)}: {raw!r} is not a valid {_type_name(base)}"
        ) from None


def _scalar_parser(base: Any):
    if base is Path:
        return lambda v: Path(str(v)).expanduser()
    if base in (int, float, str):
        return base
    if base is Any:
        return lambda v: v
    raise TypeError(f"unsupported config field type {base!r}")


def _or_none(parse):
    def wrapped(v: str):
        return None if str(v).lower() in ("none", "null") else parse(v)

    wrapped.__name__ = getattr(parse, "__name__", "value")  # argparse names it in errors
    return wrapped


def _parse_literal(choices: tuple):
    def parse(v: Any) -> Any:
        for c in choices:
            if v == c or str(v) == str(c):
                return c
        raise argparse.ArgumentTypeError(f"{v!r} is not one of {', '.join(map(str, choices))}")

    return parse


def _parse_list(item: Any):
    def parse(v: str) -> list:
        return [_scalar_parser(item)(x.strip()) for x in str(v).split(",") if x.strip()]

    return parse


def _type_name(base: Any) -> str:
    if get_origin(base) is Literal:
        return "choice of " + ", ".join(map(str, get_args(base)))
    return getattr(base, "__name__", str(base))


def _num(x: float) -> str:
    return f"{x:g}"


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return str(v)


def _undot(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        k = k.replace("-", "_")
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
