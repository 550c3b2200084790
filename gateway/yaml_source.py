"""YAML loading that remembers the line of every value, so config errors can point at it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]

# A configuration is a few levels deep and at most thousands of values. Beyond these, the
# text is a mistake or an attack (aliases that expand exponentially, "billion laughs").
MAX_DEPTH = 64
MAX_VALUES = 200_000


@dataclass
class YamlDocument:
    """Plain Python data plus the 1-based line where each path starts."""

    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


class YamlError(ValueError):
    """The text is not YAML; `line` is 1-based when the parser knows it."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def load_yaml(text: str) -> YamlDocument:
    """Parse one YAML document with safe types only, recording lines."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise YamlError(f"nested more than {MAX_DEPTH} levels deep", None) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        problem = exc.problem or "invalid YAML"
        raise YamlError(problem, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise YamlError(str(exc), None) from None
    doc = YamlDocument(data=None)
    if node is not None:
        doc.data = _convert(node, (), doc.lines, [MAX_VALUES])
    return doc


def _convert(node: yaml.Node, path: Path, lines: dict[Path, int], budget: list[int]) -> Any:
    """`node` as plain data; `budget` counts down the values still allowed."""
    line = node.start_mark.line + 1
    if len(path) > MAX_DEPTH:
        raise YamlError(f"nested more than {MAX_DEPTH} levels deep", line)
    budget[0] -= 1
    if budget[0] < 0:
        raise YamlError(f"more than {MAX_VALUES} values once aliases (*name) are expanded", line)
    lines[path] = line
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader(" ").construct_object(key_node)  # scalars only
            if key in out:
                raise YamlError(f"duplicate key {key!r}", key_node.start_mark.line + 1)
            child = (*path, str(key))
            out[key] = _convert(value_node, child, lines, budget)
            lines[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), lines, budget) for i, item in enumerate(node.value)]
    return yaml.SafeLoader(" ").construct_object(node)
