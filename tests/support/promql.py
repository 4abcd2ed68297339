"""The metric names a PromQL expression reads, without a PromQL parser (promtool is optional).

Strings, label matchers, grouping clauses, ranges, offsets and Grafana variables are removed
first; what remains are identifiers, and an identifier is a metric name unless it is a
function or aggregation (followed by "(") or a keyword. `{__name__="x"}` names x.
"""

from __future__ import annotations

import re

#: Words of PromQL that are not metric names (operators, modifiers, literals).
KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
        "start",
        "end",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_RANGE = re.compile(r"\[[^\[\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+", re.IGNORECASE)
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-f]+|\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)", re.IGNORECASE)
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Every metric name expr selects (a best effort that errs towards finding more, not less)."""
    names = set(_NAME_MATCHER.findall(expr))
    text = _VARIABLE.sub(" ", expr)
    text = _MATCHERS.sub(" ", _STRING.sub('""', text).replace('""', " "))
    text = _GROUPING.sub(" ", text)
    text = _OFFSET.sub(" ", _RANGE.sub(" ", text))
    text = _NUMBER.sub(" ", text)
    for name, call in _IDENTIFIER.findall(text):
        if not call and name.lower() not in KEYWORDS:
            names.add(name)
    return names
