"""manifest.json: written, read back, validated field by field (one sentence naming the file and
the field), its size and nesting capped before parsing."""

import json
import os

import pytest

from dpaudit.errors import DpauditError
from dpaudit.manifest import MAX_MANIFEST_BYTES, Manifest, read_manifest


def sparse(path, size: int) -> None:
    """A file of `size` bytes that takes no room on disk."""
    path.touch()
    os.truncate(path, size)


def test_round_trip(tmp_path):
    written = Manifest.new("dp-merf", epsilon=10.0, delta=1e-5, dataset="mnist", split_id="mnist:s0", seed=3)
    written.write(tmp_path)
    back = read_manifest(tmp_path)
    assert back.generator == "dp-merf" and back.epsilon == 10.0 and back.delta == 1e-5
    assert back.seed == 3 and back.versions["torch"] and back.created
    assert back.missing == []
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # written atomically: no temporary file left


def test_minimal_manifest_reports_what_it_lacks(tmp_path):
    (tmp_path / "manifest.json").write_text('{"generator": "vendor-x"}')
    back = read_manifest(tmp_path)
    assert back.epsilon is None
    assert set(back.missing) == {"epsilon", "delta", "dataset", "split_id", "seed", "versions", "created"}


def test_null_fields_count_as_missing(tmp_path):
    (tmp_path / "manifest.json").write_text('{"generator": "g", "epsilon": null, "versions": null, "details": null}')
    back = read_manifest(tmp_path)
    assert back.epsilon is None and back.versions == {} and back.details == {} and "versions" in back.missing


def test_no_manifest(tmp_path):
    assert read_manifest(tmp_path) is None


INVALID = [
    ("{not json", "not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))."),
    ("[1, 2]", "the manifest must be a JSON object, got a list of 2."),
    ('"dp-merf"', "the manifest must be a JSON object, got the string 'dp-merf'."),
    ('{"epsilon": 1}', "generator is missing."),
    ('{"generator": ""}', "generator must be a non-empty string, got the string ''."),
    ('{"generator": 3}', "generator must be a non-empty string, got 3."),
    ('{"generator": "g", "epsilon": -1}', "epsilon must be a number in [0, inf] or null, got -1."),
    ('{"generator": "g", "epsilon": "ten"}', "epsilon must be a number in [0, inf] or null, got the string 'ten'."),
    ('{"generator": "g", "epsilon": NaN}', "epsilon must be a number in [0, inf] or null, got NaN."),
    ('{"generator": "g", "epsilon": Infinity}', "epsilon must be a number in [0, inf] or null, got Infinity."),
    ('{"generator": "g", "epsilon": true}', "epsilon must be a number in [0, inf] or null, got true."),
    ('{"generator": "g", "delta": 2}', "delta must be a number in [0, 1] or null, got 2."),
    ('{"generator": "g", "seed": 1.5}', "seed must be an integer or null, got 1.5."),
    ('{"generator": "g", "seed": false}', "seed must be an integer or null, got false."),
    ('{"generator": "g", "schema": "other/9"}', "schema must be 'dpaudit.manifest/1', got the string 'other/9'."),
    ('{"generator": "g", "dataset": 3}', "dataset must be a string or null, got 3."),
    ('{"generator": "g", "split_id": ["mnist"]}', "split_id must be a string or null, got a list of 1."),
    ('{"generator": "g", "created": {}}', "created must be a string or null, got an object."),
    ('{"generator": "g", "versions": []}', "versions must be an object or null, got a list of 0."),
    ('{"generator": "g", "versions": {"torch": 2.1}}', "versions.torch must be a string, got 2.1."),
    ('{"generator": "g", "details": "sigma 1.1"}', "details must be an object or null, got the string 'sigma 1.1'."),
    ('{"generator": "g", "details": {"steps": 1' + "0" * 400 + "}}",
     "details.steps must be a number between -1e+300 and 1e+300, got an integer of 401 digits."),
    ('{"generator": "g", "details": ' + "[" * 100_000 + "]" * 100_000 + "}", "nests 100,001 levels deep, over the limit of 64."),
]


@pytest.mark.parametrize("content, message", INVALID, ids=[m[:40] for _, m in INVALID])
def test_invalid_manifests_are_one_sentence_naming_the_file_and_the_field(tmp_path, content, message):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(DpauditError) as info:
        read_manifest(tmp_path)
    assert str(info.value) == f"{tmp_path / 'manifest.json'}: {message}"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b'{"generator": "\xe9"}'), "not UTF-8 text (byte 0xe9 at offset 15)."),
        (lambda p: sparse(p, MAX_MANIFEST_BYTES + 1),
         f"{MAX_MANIFEST_BYTES + 1:,} bytes is over the limit of 1 MiB for a manifest."),
    ],
    ids=["not utf-8", "over the size cap"],
)
def test_a_manifest_that_cannot_be_read(tmp_path, make, message):
    make(tmp_path / "manifest.json")
    with pytest.raises(DpauditError) as info:
        read_manifest(tmp_path)
    assert str(info.value) == f"{tmp_path / 'manifest.json'}: {message}"


def test_the_manifest_beside_an_npz_is_read(tmp_path):
    (tmp_path / "manifest.json").write_text('{"generator": "g", "epsilon": 1}')
    assert read_manifest(tmp_path / "images.npz").epsilon == 1


def test_infinity_in_the_free_form_details_is_kept(tmp_path):
    # what Manifest.write writes for the accounting of a non-private run (json's Infinity)
    Manifest.new("dp-merf", details={"epsilon": float("inf"), "sigma": 0.0}).write(tmp_path)
    assert read_manifest(tmp_path).details["epsilon"] == float("inf")


def test_unknown_fields_are_kept_in_details(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"generator": "g", "vendor_note": "hi"}))
    assert read_manifest(tmp_path).details["unknown_fields"] == {"vendor_note": "hi"}
