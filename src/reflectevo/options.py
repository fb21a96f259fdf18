"""Command-line options made from the stage configs, the way TRL builds its CLI from its config classes.

Every field of a stage's pydantic config becomes one option: `--field-name`, its help the field's
description, its default shown once (from the field), its type checked by the config, not by typer.
A YAML file given with `--config` holds the same settings under the stage's section; flags given on the
command line override it. A field marked `argument` in `positional` is a positional argument instead.
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from rich.markup import escape

from reflectevo.config import build, load_yaml
from reflectevo.errors import InputError, ReflectEvoError


def user_errors(fn):
    """Turn a ReflectEvoError into `error: <message>` on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ReflectEvoError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            print("interrupted; finished work is cached, rerun the same command to resume", file=sys.stderr)
            raise typer.Exit(130)

    return wrapper


def _unwrap(annotation) -> Any:
    """The type inside Optional[...] / X | None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        return str  # a union of several types: given as text, validated by the config
    return annotation


def _default_text(field) -> str | None:
    if field.default_factory is not None:
        value = field.default_factory()
        return ",".join(map(str, value)) if isinstance(value, list) and value else None
    if field.default is PydanticUndefined or field.default is None or isinstance(field.default, bool):
        return None  # a flag's default is said in its help (on / off)
    return str(field.default)


def is_cli_field(field) -> bool:
    """Mappings (evolve's stage sections, train's grpo_args) are YAML-only settings."""
    return typing.get_origin(_unwrap(field.annotation)) is not dict and _unwrap(field.annotation) is not dict


def _split_list(values) -> list[str]:
    """A list setting from repeated and/or comma-separated flags: --task a,b --task c."""
    return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


def option_parameter(name: str, field, flags: list[str], argument: bool) -> tuple[inspect.Parameter, Callable]:
    """The typer parameter of one config field, and how to turn its CLI value into the config's value."""
    kind = _unwrap(field.annotation)
    help_text = field.description or ""
    default = _default_text(field)
    dashed = "--" + name.replace("_", "-")
    convert: Callable = lambda v: v  # noqa: E731
    annotation: Any = Optional[str]
    decls = [dashed, *flags]
    if kind is bool:
        annotation = Optional[bool]
        toggle = next((f for f in flags if "/" in f), None)
        if name.startswith("no_"):  # no_cache: one flag that turns something off
            decls = [dashed]
        else:
            decls = [toggle or f"{dashed}/--no-{name.replace('_', '-')}", *(f for f in flags if f != toggle)]
        if isinstance(field.default, bool) and not name.startswith("no_"):  # None: the description says
            help_text = f"{help_text} [default: {'on' if field.default else 'off'}]".strip()
    else:
        if kind in (int, float):
            annotation = Optional[kind]
        elif typing.get_origin(kind) is Literal:
            help_text = f"{help_text} (one of: {', '.join(map(str, typing.get_args(kind)))})".strip()
        elif typing.get_origin(kind) is list:
            annotation = Optional[list[str]]
            convert = _split_list
            help_text = f"{help_text} (repeat, or comma-separate)".strip()
        if default is not None:
            help_text = f"{help_text} [default: {default}]".strip()
    if field.is_required():
        help_text = f"{help_text} [required]".strip()
    help_text = escape(help_text)  # "[default: 4]" is text, not rich markup
    if argument:
        param = typer.Argument(None, help=help_text, show_default=False)
    else:
        param = typer.Option(None, *decls, help=help_text, show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=param, annotation=annotation), convert


def stage_command(app: typer.Typer, name: str, config: type[BaseModel], run: Callable[[BaseModel], Any], *,
                  section: str, help: str, positional: tuple[str, ...] = (), flags: dict[str, list[str]] | None = None,
                  before: Callable[[dict], None] | None = None, extra: dict[str, tuple[Any, Any]] | None = None):
    """Register `name` on `app`: its options are `config`'s fields (mappings are YAML-only), plus
    `--config FILE`. `flags`: extra spellings per field (short aliases, `--on/--off` pairs).

    `extra`: more parameters that are not config fields (name -> (annotation, typer.Option)); their
    values reach `run` as keyword arguments. `before(values)` may adjust the merged values.
    """
    flags = flags or {}
    params, converters = [], {}
    # Positional arguments, then the stage's own fields, then those of the shared parts (config.py).
    own = config.__annotations__
    order = sorted(config.model_fields.items(), key=lambda item: (item[0] not in positional, item[0] not in own))
    for field_name, field in order:
        if not is_cli_field(field):
            continue
        param, convert = option_parameter(field_name, field, flags.get(field_name, []), field_name in positional)
        params.append(param)
        converters[field_name] = convert
    for extra_name, (annotation, option) in (extra or {}).items():
        params.append(inspect.Parameter(extra_name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=annotation))
    params.append(inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                                    default=typer.Option(None, "--config", "-c", help=f"YAML settings (its "
                                                         f"`{section}:` section, or the whole file)")))

    def command(**given):
        config_file = given.pop("config_file")
        extras = {k: given.pop(k) for k in list(given) if k in (extra or {})}
        values = load_yaml(config_file, section) if config_file else {}
        values.update({k: converters[k](v) for k, v in given.items() if v is not None and v != []})
        if before:
            before(values)
        for field_name, field in config.model_fields.items():
            if field.is_required() and field_name not in values:
                long = [f for f in flags.get(field_name, []) if f.startswith("--")]
                spelled = field_name.upper() if field_name in positional else \
                    (long or ["--" + field_name.replace("_", "-")])[0]
                raise InputError(f"missing {spelled} (or `{field_name}:` in the config file)")
        return run(build(config, values, str(config_file or "command line")), **extras)

    command.__signature__ = inspect.Signature(params)
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help
    app.command(name)(user_errors(command))
    return command
