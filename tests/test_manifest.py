"""manifest.json: written, read back, validated."""

import json

import pytest

from dpaudit.errors import DpauditError
from dpaudit.manifest import Manifest, read_manifest


def test_round_trip(tmp_path):
    written = Manifest.new("dp-merf", epsilon=10.0, delta=1e-5, dataset="mnist", split_id="mnist:s0", seed=3)
    written.write(tmp_path)
    back = read_manifest(tmp_path)
    assert back.generator == "dp-merf" and back.epsilon == 10.0 and back.delta == 1e-5
    assert back.seed == 3 and back.versions["torch"] and back.created
    assert back.missing == []


def test_minimal_manifest_reports_what_it_lacks(tmp_path):
    (tmp_path / "manifest.json").write_text('{"generator": "vendor-x"}')
    back = read_manifest(tmp_path)
    assert back.epsilon is None
    assert set(back.missing) == {"epsilon", "delta", "dataset", "split_id", "seed", "versions", "created"}


def test_no_manifest(tmp_path):
    assert read_manifest(tmp_path) is None


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"epsilon": 1}', "needs a 'generator'"),
        ('{"generator": "g", "epsilon": -1}', "'epsilon' = -1 is outside"),
        ('{"generator": "g", "epsilon": "ten"}', "'epsilon' must be a finite number"),
        ('{"generator": "g", "delta": 2}', "'delta' = 2 is outside"),
        ('{"generator": "g", "seed": 1.5}', "'seed' must be an integer"),
        ('{"generator": "g", "schema": "other/9"}', "unknown manifest schema"),
    ],
)
def test_invalid_manifests(tmp_path, content, match):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(DpauditError, match=match) as info:
        read_manifest(tmp_path)
    assert "manifest.json" in str(info.value)


def test_unknown_fields_are_kept_in_details(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"generator": "g", "vendor_note": "hi"}))
    assert read_manifest(tmp_path).details["unknown_fields"] == {"vendor_note": "hi"}
