"""Reading the documents a user hands dpaudit (result.json, a gate policy, manifest.json) safely.

Two layers, both refusing with one sentence that names the file and, past parsing, the field:

- before parsing: a size cap (`read_text`) and a nesting cap (`check_json_nesting`,
  `check_toml_nesting`), because `json` and `tomllib` parse by recursion (a document nested
  100,000 levels deep raises RecursionError) and TOML's dotted keys (`a.a.a...`) make tomllib's
  memory grow with the square of their length;
- after parsing: the type of every field, with small checkers (`Record`, `DictOf`, `ListOf`,
  `Pair`, ...) composed into each document's schema, reporting the field's path as
  `checks.membership.metrics.auc.ci`.

Hand-written: the dependencies hold no schema library (jsonschema and pydantic are not among
them), and neither would give this one-sentence message with the field's path.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from dpaudit.errors import DpauditError
from dpaudit.errors import quote_path as quote

# Deepest nesting of arrays/objects (tables) a document may have. dpaudit's own documents nest
# at most about 8 levels (checks.membership.details.attacks.nn_distance.roc.fpr); 64 leaves room
# for free-form details while keeping the parsers' recursion far from Python's limit of 1000.
MAX_DEPTH = 64
_CHUNK = 1 << 22  # brackets per step of the count: its temporary arrays stay under 100 MB


# ---------------------------------------------------------------- messages


def _short(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[: limit - 3]) + "..."


def describe(value: Any, mapping: str = "an object") -> str:
    """What a value is, in a few words for a message: `a list of 1`, `the string 'ten'`, `null`.
    Never the whole value: it may be megabytes, or nested too deep to print."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, float) or isinstance(value, int) and abs(value) < 10**30:
        return repr(value)
    if isinstance(value, int):
        return f"an integer of {len(str(abs(value)))} digits"
    if isinstance(value, str):
        return f"the string {_short(value)}" if len(value) <= 40 else f"a string of {len(value):,} characters"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return mapping
    if isinstance(value, (datetime, date, time)):
        return f"a date/time ({value.isoformat()})"
    return type(value).__name__


def _key(key: str | int) -> str:
    """One step of a field path: `.name`, or `[3]` / `['odd key']` where a dot would mislead."""
    if isinstance(key, int):
        return f"[{key}]"
    if re.fullmatch(r"[A-Za-z0-9_\-]{1,40}", key):
        return f".{key}"
    return f"[{_short(key)}]"


class At:
    """Where a value sits: the file, and the field path inside it (`checks.fidelity.seconds`)."""

    __slots__ = ("path", "source")

    def __init__(self, source: str | os.PathLike, path: str = "", *, quoted: bool = False) -> None:
        self.source, self.path = source if quoted else quote(source), path

    def __truediv__(self, key: str | int) -> At:
        step = _key(key)
        return At(self.source, step[1:] if not self.path and step[0] == "." else self.path + step, quoted=True)

    def where(self) -> str:
        return self.path or "the document"

    def error(self, text: str) -> DpauditError:
        """`<file>: <text>.` as the exception of a user's mistake."""
        return DpauditError(f"{self.source}: {text.rstrip('.')}.")

    def fail(self, expected: str, value: Any, mapping: str = "an object") -> NoReturn:
        raise self.error(f"{self.where()} must be {expected}, got {describe(value, mapping)}")


# ---------------------------------------------------------------- reading, before parsing


_BOM = b"\xef\xbb\xbf"  # some editors start UTF-8 with it; json and tomllib refuse it


def read_text(path: str | Path, *, max_bytes: int, what: str = "file") -> str:
    """The UTF-8 text of `path` (a leading BOM dropped); DpauditError for a missing, unreadable,
    too large or non-UTF-8 file. The size is checked before the file is read."""
    path = Path(path)
    at = At(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise at.error(f"{size:,} bytes is over the limit of {_bytes(max_bytes)} for a {what}")
            data = f.read(max_bytes + 1)  # a file that grows while read is capped all the same
    except FileNotFoundError:
        raise at.error(f"no such {what}") from None
    except IsADirectoryError:
        raise at.error(f"is a folder, not a {what}") from None
    except OSError as e:
        raise at.error(f"cannot read the {what} ({e.strerror or type(e).__name__})") from None
    except ValueError as e:  # a name with a NUL byte
        raise at.error(f"cannot read the {what} ({e})") from None
    if len(data) > max_bytes:
        raise at.error(f"over the limit of {_bytes(max_bytes)} for a {what}")
    start = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return str(memoryview(data)[start:], "utf-8")
    except UnicodeDecodeError as e:
        raise at.error(f"not UTF-8 text (byte 0x{data[start + e.start]:02x} at offset {start + e.start})") from None


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# JSON strings, escapes included, taken out before the brackets are counted. Possessive, and an
# unterminated string runs to the end: the scan stays linear whatever the text.
_JSON_STRINGS = re.compile(r'"[^"\\]*+(?:\\.?+[^"\\]*+)*+(?:"|\Z)', re.DOTALL)
# TOML strings (multi-line and single-line, basic and literal) and comments, replaced by "" so
# that a quoted key still reads as a key to _TOML_DOTTED; each runs to the end of its line (or
# of the text) when unterminated, for the same reason.
_TOML_NOISE = re.compile(
    r'"""(?:\\.|[^\\])*?(?:"""|\Z)|\'\'\'.*?(?:\'\'\'|\Z)|"(?:\\.|[^"\\\n])*+(?:"|$)|\'[^\'\n]*+(?:\'|$)|#[^\n]*+',
    re.DOTALL | re.MULTILINE,
)
# A dotted key (or table header) `a.b."c"`, from its first part: the lookbehind keeps the
# search from restarting inside a word.
_TOML_DOTTED = re.compile(rb'(?<![A-Za-z0-9_"-])(?:[A-Za-z0-9_-]++|"")(?:[ \t]*+\.[ \t]*+(?:[A-Za-z0-9_-]++|""))++')


def bracket_depth(skeleton: bytes) -> int:
    """How deep `[`/`{` nest in `skeleton` (a text with its strings taken out), counted with numpy
    a chunk at a time: a Python loop would take a minute over a 64 MiB file of brackets."""
    brackets = np.frombuffer(skeleton.translate(None, _NOT_BRACKETS), np.uint8)
    depth = deepest = 0
    for start in range(0, brackets.size, _CHUNK):
        chunk = brackets[start : start + _CHUNK]
        steps = np.where((chunk == ord("[")) | (chunk == ord("{")), 1, -1)
        running = np.cumsum(steps, dtype=np.int64) + depth
        deepest, depth = max(deepest, int(running.max())), int(running[-1])
    return deepest


def check_json_nesting(text: str, source: str | os.PathLike) -> None:
    """DpauditError when the arrays and objects of a JSON text nest deeper than MAX_DEPTH
    (brackets inside strings do not count). Run before json.loads, which recurses."""
    depth = bracket_depth(_JSON_STRINGS.sub("", text).encode("utf-8", "surrogatepass"))
    if depth > MAX_DEPTH:
        raise At(source).error(f"nests {depth:,} levels deep, over the limit of {MAX_DEPTH}")


def check_toml_nesting(text: str, source: str | os.PathLike) -> None:
    """DpauditError when the arrays and inline tables of a TOML text nest deeper than MAX_DEPTH
    or a dotted key has more than MAX_DEPTH parts. Run before tomllib, which recurses on the
    first and needs memory growing with the square of the second."""
    skeleton = _TOML_NOISE.sub('""', text).encode("utf-8", "surrogatepass")
    depth = bracket_depth(skeleton)
    if depth > MAX_DEPTH:
        raise At(source).error(f"nests {depth:,} levels deep, over the limit of {MAX_DEPTH}")
    parts = max((m.group().count(b".") + 1 for m in _TOML_DOTTED.finditer(skeleton)), default=1)
    if parts > MAX_DEPTH:
        raise At(source).error(f"has a dotted key of {parts:,} parts, over the limit of {MAX_DEPTH}")


# Largest magnitude of a number in a document. Near the float maximum (1.8e308) the first margin
# or sum overflows to infinity: matplotlib's autoscaling did, drawing the report of a fuzzed
# result. Nothing dpaudit measures comes within 290 orders of magnitude of it.
MAX_MAGNITUDE = 1e300


def check_values(data: dict | list, at: At, *, finite: bool = True) -> None:
    """Walk a parsed document without recursion: DpauditError for nesting deeper than MAX_DEPTH,
    a number beyond +-MAX_MAGNITUDE and, with `finite`, NaN or Infinity (not JSON, though
    Python's json module reads them)."""
    stack: list[tuple[dict | list, At, int]] = [(data, at, 1)]
    while stack:
        container, here, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise here.error(f"{here.where()} nests deeper than the limit of {MAX_DEPTH} levels")
        for key, value in container.items() if isinstance(container, dict) else enumerate(container):
            if isinstance(value, (dict, list)):
                stack.append((value, here / key, depth + 1))
            elif isinstance(value, float) and not math.isfinite(value):
                if finite:
                    (here / key).fail("a finite number (JSON has no NaN or Infinity; write null)", value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_MAGNITUDE:
                (here / key).fail(f"a number between -{MAX_MAGNITUDE:g} and {MAX_MAGNITUDE:g}", value)


def parse_json(text: str, source: str | os.PathLike) -> Any:
    """json.loads behind the nesting cap; DpauditError naming `source` for anything invalid."""
    check_json_nesting(text, source)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise At(source).error(f"not valid JSON ({e})") from None
    except ValueError:  # the only other: an integer longer than sys.get_int_max_str_digits()
        raise At(source).error(f"not valid JSON (an integer of more than {sys.get_int_max_str_digits():,} digits)") from None
    except RecursionError:  # cannot happen behind the nesting cap; kept so it never becomes a traceback
        raise At(source).error(f"nests deeper than the limit of {MAX_DEPTH} levels") from None


def parse_toml(text: str, source: str | os.PathLike) -> dict:
    """tomllib.loads behind the nesting caps; DpauditError naming `source` for anything invalid."""
    check_toml_nesting(text, source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise At(source).error(f"not valid TOML ({e})") from None
    except RecursionError:  # as in parse_json
        raise At(source).error(f"nests deeper than the limit of {MAX_DEPTH} levels") from None
    check_values(data, At(source), finite=False)  # dotted keys inside nested tables add up
    return data


# ---------------------------------------------------------------- checkers, after parsing


class Check:
    """One field's type: `check(value, at)` returns the value (a range as a tuple, a record
    without its unknown fields) or raises the sentence naming `at`. `expected` words it;
    `shape_ok` says whether the value has the right outer type (what Nullable needs)."""

    expected = "a value"

    def shape_ok(self, value: Any) -> bool:
        return True

    def __call__(self, value: Any, at: At) -> Any:
        if not self.shape_ok(value):
            at.fail(self.expected, value)
        return self.inner_check(value, at)

    def inner_check(self, value: Any, at: At) -> Any:
        return value


class Scalar(Check):
    """A single value that passes `ok`."""

    def __init__(self, expected: str, ok: Callable[[Any], bool]) -> None:
        self.expected, self.shape_ok = expected, ok


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


STRING = Scalar("a string", lambda v: isinstance(v, str))
NAME = Scalar("a non-empty string", lambda v: isinstance(v, str) and v != "")
NUMBER = Scalar("a finite number", _is_number)
INTEGER = Scalar("an integer", _is_int)
COUNT = Scalar("a non-negative integer", lambda v: _is_int(v) and v >= 0)
BOOLEAN = Scalar("true or false", lambda v: isinstance(v, bool))
OBJECT = Scalar("an object", lambda v: isinstance(v, dict))  # free-form: any keys, any JSON below


def between(low: float, high: float) -> Scalar:
    """A finite number in [low, high]."""
    return Scalar(f"a number in [{low:g}, {high:g}]", lambda v: _is_number(v) and low <= v <= high)


def one_of(*choices: str) -> Scalar:
    """One of a few strings (or the one string)."""
    expected = repr(choices[0]) if len(choices) == 1 else "one of " + ", ".join(map(repr, choices))
    return Scalar(expected, lambda v: isinstance(v, str) and v in choices)


class Nullable(Check):
    """`inner` or null."""

    def __init__(self, inner: Check) -> None:
        self.inner, self.expected = inner, f"{inner.expected} or null"

    def shape_ok(self, value: Any) -> bool:
        return value is None or self.inner.shape_ok(value)

    def inner_check(self, value: Any, at: At) -> Any:
        return None if value is None else self.inner.inner_check(value, at)


class ListOf(Check):
    """A list whose every item passes `item`."""

    def __init__(self, item: Check) -> None:
        self.item, self.expected = item, f"a list of {_plural(item.expected)}"

    def shape_ok(self, value: Any) -> bool:
        return isinstance(value, list)

    def inner_check(self, value: list, at: At) -> list:
        return [self.item(v, at / i) for i, v in enumerate(value)]


class Pair(Check):
    """A list of exactly two numbers, each of which may be null (how NaN and infinity are
    written), returned as a tuple: a metric's range or confidence interval."""

    expected = "a list of two numbers"
    _item = Nullable(NUMBER)

    def shape_ok(self, value: Any) -> bool:
        return isinstance(value, list) and len(value) == 2

    def inner_check(self, value: list, at: At) -> tuple:
        return tuple(self._item(v, at / i) for i, v in enumerate(value))


class DictOf(Check):
    """An object whose every value passes `item` (keys are strings in JSON and TOML alike)."""

    expected = "an object"

    def __init__(self, item: Check) -> None:
        self.item = item

    def shape_ok(self, value: Any) -> bool:
        return isinstance(value, dict)

    def inner_check(self, value: dict, at: At) -> dict:
        return {k: self.item(v, at / k) for k, v in value.items()}


class Record(Check):
    """An object with known fields, each with its check; `required` must be there. Unknown fields
    are dropped (a newer version may add some: forward compatibility), or kept with
    `keep_unknown` where the object is free-form data that merely has some typed fields."""

    expected = "an object"

    def __init__(self, fields: dict[str, Check], required: Iterable[str] = (), *, keep_unknown: bool = False) -> None:
        self.fields, self.required, self.keep_unknown = fields, tuple(required), keep_unknown

    def shape_ok(self, value: Any) -> bool:
        return isinstance(value, dict)

    def inner_check(self, value: dict, at: At) -> dict:
        for name in self.required:
            if name not in value:
                raise at.error(f"{(at / name).where()} is missing")
        checked = {}
        for name, item in value.items():  # in the document's order, which the report shows
            if name in self.fields:
                checked[name] = self.fields[name](item, at / name)
            elif self.keep_unknown:
                checked[name] = item
        return checked


def _plural(expected: str) -> str:
    """`a string` -> `strings`, `a non-negative integer` -> `non-negative integers`."""
    article, _, rest = expected.partition(" ")
    if article not in ("a", "an") or not rest or " or " in rest or " " in rest and not rest.endswith(("integer", "string", "number")):
        return f"items that are each {expected}"
    return rest + "s"
