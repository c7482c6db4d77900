"""Reading a YAML config file while remembering where each value came from.

``read(path)`` returns the plain data (with ``${VAR}`` / ``${VAR:-default}`` replaced
from the environment) and a ``Lines`` map from key paths to line numbers, so that a
validation error can say ``router.yaml:14: destinations[0].settings.api_key: …``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]
ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """One or more problems in a config file; ``str()`` lists them, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Lines:
    def __init__(self, file: str) -> None:
        self.file = file
        self.by_path: dict[Path_, int] = {}

    def line(self, path: Sequence[str | int]) -> int | None:
        """The line of the longest prefix of ``path`` that the file contains."""
        key = tuple(path)
        while key:
            if key in self.by_path:
                return self.by_path[key]
            key = key[:-1]
        return self.by_path.get((), None)

    def where(self, path: Sequence[str | int]) -> str:
        line = self.line(path)
        return f"{self.file}:{line}" if line else self.file


def dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def read(path: str | Path, env: Mapping[str, str] | None = None) -> tuple[Any, Lines]:
    path = Path(path)
    lines = Lines(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc.strerror}"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(path, exc)]) from exc
    if node is None:
        return {}, lines
    problems: list[str] = []
    loader = yaml.SafeLoader("")
    data = _build(node, (), lines, os.environ if env is None else env, problems, loader)
    if problems:
        raise ConfigError(problems)
    return data, lines


# PyYAML's words for the slips people make most, and what to do about each one.
YAML_HINTS = (
    ("but found '<block", "the indentation does not match the lines above: the keys of one "
     "mapping, and the '-' items of one list, must start in the same column"),
    ("found character '\\t'", "a tab character: YAML is indented with spaces only"),
    ("mapping values are not allowed here", "an unexpected ': ': quote a value that "
     "contains one (key: 'a: b'), or look for a key without its ':' just above"),
    ("found unexpected end of stream", "the file ends inside a quoted string: close the "
     "quote"),
    ("expected ',' or", "a [list] or {mapping} is not closed, or lacks a comma between "
     "items"),
)


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    """``file:line: invalid YAML …`` in plain words, keeping PyYAML's own (searchable) text
    and the line where the enclosing block or quote began, which is often the culprit."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark else str(path)
    problem = str(getattr(exc, "problem", None) or exc)
    hint = next((text for key, text in YAML_HINTS if key in problem), None)
    message = f"{hint} (YAML: {problem})" if hint else problem
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and (mark is None or start.line != mark.line):
        message += f", {context} from line {start.line + 1}"
    column = f" at column {mark.column + 1}" if mark else ""
    return f"{where}: invalid YAML{column}: {message}"


def _build(node: yaml.Node, at: Path_, lines: Lines, env: Mapping[str, str],
           problems: list[str], loader: yaml.SafeLoader) -> Any:
    lines.by_path.setdefault(at, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
            if key in out:
                problems.append(f"{lines.file}:{key_node.start_mark.line + 1}: "
                                f"{dotted((*at, key))}: the key is given twice")
            lines.by_path[(*at, key)] = key_node.start_mark.line + 1
            out[key] = _build(value_node, (*at, key), lines, env, problems, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*at, i), lines, env, problems, loader)
                for i, item in enumerate(node.value)]
    value = loader.construct_object(node)  # type: ignore[no-untyped-call]
    if isinstance(value, str) and "${" in value:
        return _interpolate(value, at, lines, env, problems)
    return value


def _interpolate(value: str, at: Path_, lines: Lines, env: Mapping[str, str],
                 problems: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        problems.append(f"{lines.where(at)}: {dotted(at)}: environment variable {name} is "
                        f"not set (write ${{{name}:-default}} to give a default)")
        return ""

    return ENV.sub(replace, value)
