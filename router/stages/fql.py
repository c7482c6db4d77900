"""A subset of Segment's Filter Query Language (FQL), compiled once into a predicate.

    compile_fql("type = 'track' and event != 'Heartbeat'")  ->  Callable[[dict], bool]

Grammar (loosest binding first)::

    expr     := and ('or' and)*
    and      := not ('and' not)*
    not      := '!' not | compare               # `!a = b` means `!(a = b)`
    compare  := operand (('=' | '!=' | '<' | '<=' | '>' | '>=' | 'in') operand)?
    operand  := string | number | 'true' | 'false' | 'null' | '[' literals ']'
              | path | function '(' args ')' | '(' expr ')'

- **Paths** are dot-separated field names (`context.library.version`). As in Segment, a
  name character outside `a-z A-Z 0-9 _ -` is escaped with a backslash:
  `properties.product\\ 1.price`, `properties.a\\.b`; a path starts with a letter, `_` or
  an escape. A digit-only segment indexes a list (`properties.items.0.sku`). A missing
  path is `null`.
- **Strings** use single or double quotes; `\\'`, `\\"` and `\\\\` are escapes, any other
  backslash is kept, so glob escapes such as `'ab\\*d'` reach `match` as written.
- **Comparison** follows Segment: `=` is true only when both sides have the same type
  (string, number, bool, null, list, object) and are equal; `!=` is its negation, so
  `properties.x != 'a'` is true for a missing `x`. `< <= > >=` compare numbers only;
  any other pair (a string with a number, null with anything) is false, never an error.
  `x in list` is true when `x` strictly equals an element (`'dark-mode' in
  properties.features`, `type in ['track', 'page']`); a right side that is not a list is
  false. `true` and `1` are different types.
- **Logic**: `and`, `or`, `!`. A value counts as true only if it is the boolean `true`
  (a bare `properties.enabled` matches only `true`; `!` of null is true).
- **Functions** (null-safe, Segment's defaults): `contains(s, sub)` (false unless both are
  strings), `match(s, glob)` (full, case-sensitive glob: `* ? [abc] [a-z] \\x`; false
  unless both are strings), `length(x)` (list elements, or UTF-8 bytes of a string;
  `length(null)` is 0, other types null), `lowercase(s)`, `uppercase(s)` (null unless a
  string), `typeof(x)` (`"string" "number" "bool" "null" "list" "object"`).

Syntax errors raise `FQLSyntaxError` with a 0-based `.position`. Evaluation does not raise
for any JSON input; a caller still guards it (filters fail closed).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

Getter = Callable[[dict[str, Any]], Any]

KEYWORDS = frozenset(("and", "or", "in", "true", "false", "null"))
FUNCTIONS = {"contains": 2, "match": 2, "length": 1, "lowercase": 1, "uppercase": 1, "typeof": 1}


class FQLSyntaxError(ValueError):
    def __init__(self, detail: str, position: int, expr: str) -> None:
        super().__init__(f"{detail} at position {position} in {expr!r}")
        self.detail = detail
        self.position = position


def compile_fql(expr: str) -> Callable[[dict[str, Any]], bool]:
    """Parse `expr` once and return a predicate over an event dict."""
    node = _Parser(expr).parse()
    fn, is_bool = node
    if is_bool:
        return fn
    return lambda event: fn(event) is True


# --- tokens ---------------------------------------------------------------------------

# A token is (kind, value, position); kinds: str num path op punct end.
Token = tuple[str, Any, int]
_NAME = r"(?:[A-Za-z0-9_-]|\\.)+"
TOKEN = re.compile(
    rf"""(?:
      (?P<str>'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")
    | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<path>(?=[A-Za-z_\\]){_NAME}(?:\.{_NAME})*)
    | (?P<op>!=|<=|>=|[=<>])
    | (?P<punct>[!()\[\],])
    )""",
    re.VERBOSE | re.DOTALL,
)
NAME = re.compile(_NAME, re.DOTALL)
ESCAPED = re.compile(r"\\(.)", re.DOTALL)
STRING_ESCAPE = re.compile(r"\\(['\"\\])")
LEXICAL_ERRORS = {
    "'": "unterminated string",
    '"': "unterminated string",
    ".": "empty field name in path",
    "\\": "a backslash must escape a character",
}


def _tokenize(expr: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(expr)
    while True:
        while i < n and expr[i].isspace():
            i += 1
        if i == n:
            break
        m = TOKEN.match(expr, i)
        if m is None or m.lastgroup is None:
            c = expr[i]
            detail = LEXICAL_ERRORS.get(c, f"unexpected character {c!r}")
            if c == "." and tokens and tokens[-1][0] == "num":
                detail = "malformed number"
            raise FQLSyntaxError(detail, i, expr)
        kind, text = m.lastgroup, m.group(m.lastgroup)
        value: Any = text
        if kind == "str":
            value = STRING_ESCAPE.sub(r"\1", text[1:-1])
        elif kind == "num":
            value = float(text) if any(c in text for c in ".eE") else int(text)
        elif kind == "path":
            names = NAME.findall(text)  # an unescaped dot never matches a name
            value = (tuple(ESCAPED.sub(r"\1", name) for name in names), "\\" in text)
        tokens.append((kind, value, i))
        i = m.end()
    tokens.append(("end", None, n))
    return tokens


# --- parser: recursive descent straight to closures -----------------------------------

# A compiled node is (fn, is_bool): is_bool says fn always returns a real bool.
Node = tuple[Getter, bool]


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokenize(expr)
        self.i = 0

    def parse(self) -> Node:
        node = self._or()
        kind, value, pos = self.tokens[self.i]
        if kind != "end":
            raise self._error(f"unexpected {self._show(kind, value)}", pos)
        return node

    def _error(self, detail: str, pos: int) -> FQLSyntaxError:
        return FQLSyntaxError(detail, pos, self.expr)

    @staticmethod
    def _show(kind: str, value: Any) -> str:
        if kind == "end":
            return "end of expression"
        if kind == "path":
            return repr(".".join(value[0]))
        return repr(value)

    def _peek(self) -> Token:
        return self.tokens[self.i]

    def _keyword(self, word: str) -> bool:
        kind, value, _ = self.tokens[self.i]
        return kind == "path" and not value[1] and value[0] == (word,)

    def _punct(self, char: str) -> bool:
        kind, value, _ = self.tokens[self.i]
        return kind == "punct" and value == char

    def _expect(self, char: str) -> None:
        kind, value, pos = self.tokens[self.i]
        if not (kind == "punct" and value == char):
            raise self._error(f"expected {char!r}, found {self._show(kind, value)}", pos)
        self.i += 1

    def _or(self) -> Node:
        parts = [self._and()]
        while self._keyword("or"):
            self.i += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else _any_of([fn for fn, _ in parts])

    def _and(self) -> Node:
        parts = [self._not()]
        while self._keyword("and"):
            self.i += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else _all_of([fn for fn, _ in parts])

    def _not(self) -> Node:
        if self._punct("!"):
            self.i += 1
            fn, _ = self._not()
            return (lambda e: fn(e) is not True), True
        return self._compare()

    def _compare(self) -> Node:
        left = self._operand()
        kind, value, _ = self._peek()
        if kind == "op":
            self.i += 1
            return _comparison(value, left, self._operand()), True
        if self._keyword("in"):
            self.i += 1
            return _membership(left, self._operand()), True
        return left[0], left[1]

    def _operand(self) -> tuple[Getter, bool, Any]:
        """An operand: (fn, is_bool, constant) where constant is _DYNAMIC unless literal."""
        kind, value, pos = self._peek()
        if kind in ("str", "num"):
            self.i += 1
            return _const(value), False, value
        if kind == "punct" and value == "[":
            return self._list()
        if kind == "punct" and value == "(":
            self.i += 1
            fn, is_bool = self._or()
            self._expect(")")
            return fn, is_bool, _DYNAMIC
        if kind == "path":
            segments, escaped = value
            if not escaped and len(segments) == 1:
                name = segments[0]
                if name in ("true", "false", "null"):
                    self.i += 1
                    literal = {"true": True, "false": False, "null": None}[name]
                    return _const(literal), isinstance(literal, bool), literal
                if name in KEYWORDS:
                    raise self._error(f"expected a value, found {name!r}", pos)
                nxt = self.tokens[self.i + 1]
                if nxt[0] == "punct" and nxt[1] == "(":
                    return self._call(name, pos)
            self.i += 1
            return _getter(segments), False, _DYNAMIC
        raise self._error(f"expected a value, found {self._show(kind, value)}", pos)

    def _list(self) -> tuple[Getter, bool, Any]:
        self.i += 1  # [
        items: list[Any] = []
        while not self._punct("]"):
            if items:
                self._expect(",")
            pos = self._peek()[2]
            _, _, constant = self._operand()
            if constant is _DYNAMIC or isinstance(constant, list):
                raise self._error("a list may hold only string, number, bool or null literals", pos)
            items.append(constant)
        self.i += 1  # ]
        return _const(items), False, items

    def _call(self, name: str, pos: int) -> tuple[Getter, bool, Any]:
        if name not in FUNCTIONS:
            known = ", ".join(sorted(FUNCTIONS))
            raise self._error(f"unknown function {name!r} (known: {known})", pos)
        self.i += 2  # name (
        args: list[tuple[Getter, bool, Any]] = []
        while not self._punct(")"):
            if args:
                self._expect(",")
            args.append(self._operand())
        self.i += 1  # )
        if len(args) != FUNCTIONS[name]:
            raise self._error(f"{name}() takes {FUNCTIONS[name]} argument(s), got {len(args)}", pos)
        try:
            return _function(name, args)
        except re.error as exc:  # a literal glob compiles here, e.g. the range in '[z-a]'
            raise self._error(f"bad glob pattern: {exc.msg}", pos) from exc


# --- evaluation -----------------------------------------------------------------------

_DYNAMIC = object()


def _const(value: Any) -> Getter:
    return lambda e: value


def _getter(segments: tuple[str, ...]) -> Getter:
    keys: list[Any] = [int(s) if s.isdigit() else s for s in segments]
    if len(keys) == 1 and isinstance(keys[0], str):
        k = keys[0]
        return lambda e: e.get(k)
    if len(keys) == 2 and all(isinstance(k, str) for k in keys):
        a, b = keys

        def get2(e: dict[str, Any]) -> Any:
            v = e.get(a)
            return v.get(b) if isinstance(v, dict) else None

        return get2

    def get(e: dict[str, Any]) -> Any:
        v: Any = e
        for seg, key in zip(segments, keys, strict=True):
            if isinstance(v, dict):
                v = v.get(seg)
            elif isinstance(v, list) and isinstance(key, int):
                v = v[key] if key < len(v) else None
            else:
                return None
        return v

    return get


def _any_of(fns: list[Getter]) -> Node:
    if len(fns) == 2:
        a, b = fns
        return (lambda e: a(e) is True or b(e) is True), True
    return (lambda e: any(f(e) is True for f in fns)), True


def _all_of(fns: list[Getter]) -> Node:
    if len(fns) == 2:
        a, b = fns
        return (lambda e: a(e) is True and b(e) is True), True
    return (lambda e: all(f(e) is True for f in fns)), True


def _is_number(v: Any) -> bool:
    t = type(v)
    return t is int or t is float


def strict_eq(a: Any, b: Any) -> bool:
    """Segment's `=`: same type and equal (numbers compare across int/float; bool is not 1)."""
    ta, tb = type(a), type(b)
    if ta is not tb:
        return _is_number(a) and _is_number(b) and a == b
    if ta is list:
        return len(a) == len(b) and all(strict_eq(x, y) for x, y in zip(a, b, strict=True))
    if ta is dict:
        return a.keys() == b.keys() and all(strict_eq(a[k], b[k]) for k in a)
    return bool(a == b)


def _equals_constant(c: Any) -> Callable[[Any], bool]:
    if isinstance(c, str):
        return lambda v: v == c
    if c is None or isinstance(c, bool):
        return lambda v: v is c
    if _is_number(c):
        return lambda v: (type(v) is int or type(v) is float) and v == c
    return lambda v: strict_eq(v, c)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _comparison(op: str, left: tuple[Getter, bool, Any], right: tuple[Getter, bool, Any]) -> Getter:
    lf, _, lc = left
    rf, _, rc = right
    if op in ("=", "!="):
        if rc is not _DYNAMIC or lc is not _DYNAMIC:
            side, constant = (lf, rc) if rc is not _DYNAMIC else (rf, lc)
            test = _equals_constant(constant)
            if op == "=":
                return lambda e: test(side(e))
            return lambda e: not test(side(e))
        if op == "=":
            return lambda e: strict_eq(lf(e), rf(e))
        return lambda e: not strict_eq(lf(e), rf(e))
    order = _ORDER[op]

    def compare(e: dict[str, Any]) -> bool:
        a, b = lf(e), rf(e)
        return _is_number(a) and _is_number(b) and order(a, b)

    return compare


def _membership(left: tuple[Getter, bool, Any], right: tuple[Getter, bool, Any]) -> Getter:
    lf, _, _ = left
    rf, _, rc = right
    if isinstance(rc, list) and all(isinstance(x, str) for x in rc):
        strings = frozenset(rc)
        return lambda e: (type(v := lf(e)) is str) and v in strings

    def member(e: dict[str, Any]) -> bool:
        items = rf(e)
        if not isinstance(items, list):
            return False
        v = lf(e)
        return any(strict_eq(v, x) for x in items)

    return member


def _function(name: str, args: list[tuple[Getter, bool, Any]]) -> tuple[Getter, bool, Any]:
    f = args[0][0]
    if name == "length":

        def length(e: dict[str, Any]) -> int | None:
            v = f(e)
            if v is None:
                return 0
            if isinstance(v, str):
                return len(v.encode("utf-8"))
            return len(v) if isinstance(v, list) else None

        return length, False, _DYNAMIC
    if name == "lowercase":
        return (lambda e: v.lower() if isinstance(v := f(e), str) else None), False, _DYNAMIC
    if name == "uppercase":
        return (lambda e: v.upper() if isinstance(v := f(e), str) else None), False, _DYNAMIC
    if name == "typeof":
        return (lambda e: _type_name(f(e))), False, _DYNAMIC
    g, _, constant = args[1]
    if name == "contains":

        def contains(e: dict[str, Any]) -> bool:
            s, sub = f(e), g(e)
            return isinstance(s, str) and isinstance(sub, str) and sub in s

        return contains, True, _DYNAMIC
    # match
    if isinstance(constant, str):
        fixed = _glob(constant)
        return (lambda e: isinstance(s := f(e), str) and fixed(s) is not None), True, _DYNAMIC

    def match(e: dict[str, Any]) -> bool:
        s, pattern = f(e), g(e)
        return isinstance(s, str) and isinstance(pattern, str) and _glob(pattern)(s) is not None

    return match, True, _DYNAMIC


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "list" if isinstance(v, list) else "object"


@lru_cache(maxsize=256)
def _glob(pattern: str) -> Callable[[str], re.Match[str] | None]:
    """Segment glob -> a compiled full-match: `*`, `?`, `[abc]`, `[a-z]`, `\\x` literal."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and (close := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : close]
            out.append("[" + "".join("\\" + ch if ch in "\\^[]" else ch for ch in body) + "]")
            i = close + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL).fullmatch
