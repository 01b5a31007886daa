"""Hostile documents, generated: result.json mutated at random paths, random policies (TOML and
bytes), random manifests. The only outcomes allowed are a valid object or a DpauditError whose
one-line message names the file; a result that loads must also render and go through the gate
raising nothing but DpauditError (else its validation is too lax), and a manifest that loads must
give a result that loads."""

from __future__ import annotations

import copy
import json
import math
import tomllib
import warnings

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dpaudit.audit.gate import (
    RULE_KEYS,
    Verdict,
    apply_policy,
    load_policy,
    parse_policy,
    write_junit,
)
from dpaudit.audit.result import AuditResult, load_result
from dpaudit.errors import DpauditError
from dpaudit.manifest import Manifest, read_manifest
from dpaudit.reports.html import render_report
from tests.reports.fakes import fake_result

# Repeatable (the same examples every run, no example database); the example counts are sized
# for the whole file to run in about 20 s on one thread.
FUZZ = dict(derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

BASE = fake_result().to_dict()
BASE_MANIFEST = dict(BASE["manifest"])
POLICY_TEXT = """
[[rule]]
metric = "membership.auc"
max = 0.6

[[rule]]
name = "empirical epsilon within the claim"
metric = "membership.epsilon_lower_bound"
max_from = "manifest.epsilon"

[[rule]]
metric = "membership.auc.ci_high"
max_from = "similarity.near_copy_share.baseline"

[[rule]]
metric = "utility.tstr_accuracy"
min = 0.8
"""
POLICY = parse_policy(tomllib.loads(POLICY_TEXT), "policy.toml")


def _paths(doc) -> list[tuple]:
    """Every path into `doc` (a list's first two items only: the rest are more of the same)."""
    found, stack = [], [(doc, ())]
    while stack:
        node, path = stack.pop()
        found.append(path)
        items = node.items() if isinstance(node, dict) else enumerate(node[:2]) if isinstance(node, list) else ()
        stack.extend((v, (*path, k)) for k, v in items)
    return found


RESULT_PATHS = _paths(BASE)
TYPED_PATHS = [p for p in RESULT_PATHS if p and p != ("schema",)]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, -1, 2, 10**400, 1e308, -1e301, 5e-324])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["higher", "lower", "target", "info", "membership.auc", "dpaudit.result/1", "iVBORw0KGgo="])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
OPERATIONS = ("replace", "delete", "wrap", "stringify", "add", "shorten", "lengthen")


def _mutate(doc, path: tuple, operation: str, value):
    """Apply one mutation at `path` (nothing if an earlier mutation removed the path)."""
    parent = None
    node = doc
    for key in path:
        if not isinstance(node, (dict, list)) or (isinstance(node, dict) and key not in node) or (
            isinstance(node, list) and not (isinstance(key, int) and key < len(node))
        ):
            return doc
        parent, node = node, node[key]
    if not path:
        return value if operation == "replace" else [doc] if operation == "wrap" else doc

    def put(new):
        parent[path[-1]] = new

    if operation == "replace":
        put(value)
    elif operation == "delete":
        del parent[path[-1]]
    elif operation == "wrap":
        put([node])
    elif operation == "stringify":
        put(json.dumps(node))
    elif operation == "add":
        if isinstance(node, dict):
            node[value if isinstance(value, str) else "extra"] = value
        elif isinstance(node, list):
            node.append(value)
        else:
            put(value)
    elif operation == "shorten":
        put(node[:1] if isinstance(node, (list, str)) else {} if isinstance(node, dict) else None)
    elif operation == "lengthen":
        put(node * 3 if isinstance(node, (list, str)) else -node if isinstance(node, (int, float)) else value)
    return doc


# Values of the same JSON type as the one they replace: documents that still type-check, with
# content a report must survive (extremes, markup, mathtext, empty and long lists).
numbers = st.sampled_from([0, -0.0, 1, -1, 1e300, -1e300, 5e-324, 1e-300, 10**15]) | st.floats(-1e6, 1e6)
texts = st.text(max_size=20) | st.sampled_from(["", "<script>alert(1)</script>", "$\\alpha$ & }}{{", "x" * 500,
                                               "higher", "target", "membership.auc"])


@st.composite
def _same_type(draw, node):
    if isinstance(node, bool) or node is None:
        return draw(st.booleans() | st.none())
    if isinstance(node, int):
        return draw(st.integers(0, 10**6) | numbers)
    if isinstance(node, float):
        return draw(numbers)
    if isinstance(node, str):
        return draw(texts)
    if isinstance(node, list):
        return draw(st.sampled_from([[], node[:1], node[::-1], node * 3, [*node, draw(json_values)]]))
    extra = draw(st.dictionaries(texts, json_values, max_size=2))
    kept = {k: v for k, v in node.items() if draw(st.integers(0, 7))}  # drops about one key in eight
    return {**kept, **extra}


def _node(doc, path):
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated_results(draw, typed: bool = False) -> str:
    """The text of a valid result.json after 1-3 random mutations of any kind or, `typed`, of any
    kind inside the free-form details and settings and elsewhere a value replaced by another of
    its JSON type. Untyped, now and then cut short."""
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(TYPED_PATHS if typed else RESULT_PATHS))
        if typed and not {"details", "settings"} & set(path[:-1]):
            try:
                node = _node(doc, path)
            except (KeyError, IndexError, TypeError):  # an earlier mutation took it away
                continue
            doc = _mutate(doc, path, "replace", draw(_same_type(node)))
        else:
            doc = _mutate(doc, path, draw(st.sampled_from(OPERATIONS)), draw(json_values))
    text = json.dumps(doc)  # allow_nan: NaN and Infinity reach the reader, as Python writes them
    if not typed and draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


def assert_refusal(error: DpauditError, path) -> None:
    """One sentence, on one line, headed by the file's name."""
    message = str(error)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message and message.endswith("."), message


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _load(folder, text: str) -> AuditResult | None:
    path = folder / "result.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        result = load_result(path)
    except DpauditError as e:
        assert_refusal(e, path)
        event("refused")  # counts shown by pytest --hypothesis-show-statistics
        return None
    event("loaded")
    return result


def _gate(result: AuditResult) -> Verdict | None:
    try:
        return apply_policy(result, POLICY)
    except DpauditError as e:
        assert_refusal(e, "policy.toml")
        return None


@settings(max_examples=300, **FUZZ)
@given(text=mutated_results() | mutated_results(typed=True))
def test_mutated_results_load_or_are_refused(folder, text):
    result = _load(folder, text)
    if result is not None:
        _gate(result)
        assert AuditResult.from_dict(json.loads(result.to_json())).to_dict() == result.to_dict()  # a loaded result saves


@settings(max_examples=20, **FUZZ)
@given(text=mutated_results(typed=True))
def test_mutated_results_that_load_render_and_gate(folder, text):
    result = _load(folder, text)
    if result is not None:
        verdict = _gate(result)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # matplotlib's, about odd axis limits
            assert render_report(result, verdict).startswith("<!DOCTYPE html>")


@settings(max_examples=150, **FUZZ)
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes_as_result(folder, data):
    path = folder / "bytes.json"
    path.write_bytes(data)
    with pytest.raises(DpauditError) as info:
        load_result(path)
    assert_refusal(info.value, path)


# ---- policies ----

def _toml(value) -> str:
    """A value as a TOML literal (a tiny writer: the dependencies have none)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else "inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's, but for lone surrogates (tomllib refuses those)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"


toml_values = st.recursive(
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=10)
    | st.sampled_from(["membership.auc", "manifest.epsilon", "utility.tstr_accuracy.ci_low", "a.b.c.d", "x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
rules = st.dictionaries(st.sampled_from([*RULE_KEYS, "maximum", "rule"]) | st.text(max_size=5), toml_values, max_size=5)


@st.composite
def policy_texts(draw) -> str:
    """A policy: [[rule]] tables of random keys and values, or the same as an inline array, or a
    valid policy's text spliced at random."""
    kind = draw(st.sampled_from(["tables", "inline", "spliced"]))
    if kind == "tables":
        return "\n".join("[[rule]]\n" + "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in r.items())
                         for r in draw(st.lists(rules, max_size=4)))
    if kind == "inline":
        return f"rule = {_toml(draw(st.lists(rules | toml_values, max_size=3)))}\n"
    at = draw(st.integers(0, len(POLICY_TEXT)))
    return POLICY_TEXT[:at] + draw(st.text(max_size=8)) + POLICY_TEXT[at + draw(st.integers(0, 8)):]


@settings(max_examples=300, **FUZZ)
@given(text=policy_texts())
def test_random_policies_load_or_are_refused(folder, text):
    path = folder / "policy.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        policy = load_policy(path)
    except DpauditError as e:
        assert_refusal(e, path)
        event("refused")
        return
    event("loaded")
    try:
        verdict = apply_policy(fake_result(), policy)
    except DpauditError as e:
        assert_refusal(e, path)  # a rule that names nothing: the policy file and the rule
        assert " rule " in str(e)
        return
    write_junit(verdict, folder / "junit.xml")


@settings(max_examples=100, **FUZZ)
@given(data=st.binary(max_size=200))
def test_random_bytes_as_policy(folder, data):
    path = folder / "bytes.toml"
    path.write_bytes(data)
    try:
        load_policy(path)
    except DpauditError as e:
        assert_refusal(e, path)


# ---- manifests ----

MANIFEST_KEYS = [*BASE_MANIFEST, "vendor_note"]


@st.composite
def manifest_texts(draw) -> str:
    """A valid manifest with some fields changed, dropped or added, or its text cut short."""
    doc = copy.deepcopy(BASE_MANIFEST)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(MANIFEST_KEYS))
        if draw(st.booleans()):
            doc.pop(key, None)
        else:
            doc[key] = draw(json_values | st.sampled_from([{"torch": "2.14.1"}, {"sigma": math.inf}, 1e-5, "mnist"]))
    text = json.dumps(doc)
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


@settings(max_examples=300, **FUZZ)
@given(text=manifest_texts())
def test_random_manifests_read_or_are_refused(folder, text):
    path = folder / "manifest.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        manifest = read_manifest(folder)
    except DpauditError as e:
        assert_refusal(e, path)
        event("refused")
        return
    event("loaded")
    assert isinstance(manifest, Manifest)
    # what evaluate does with it: a result embedding the manifest, saved and read back
    result = fake_result()
    result.manifest, result.manifest_missing = manifest.to_dict(), manifest.missing
    assert AuditResult.from_dict(json.loads(result.to_json())).manifest["generator"] == manifest.generator


@settings(max_examples=100, **FUZZ)
@given(data=st.binary(max_size=200))
def test_random_bytes_as_manifest(folder, data):
    (folder / "manifest.json").write_bytes(data)
    try:
        read_manifest(folder)
    except DpauditError as e:
        assert_refusal(e, folder / "manifest.json")
