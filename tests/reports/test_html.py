"""The HTML report and comparison, rendered from hand-built AuditResults."""

import base64
import io
import re

import numpy as np
import pytest
from click.testing import CliRunner
from markupsafe import escape
from PIL import Image

from dpaudit.audit.gate import apply_policy, parse_policy
from dpaudit.audit.result import AuditResult
from dpaudit.cli import cli
from dpaudit.errors import DpauditError
from dpaudit.reports.html import (
    check_comparable,
    fmt,
    image,
    render_comparison,
    render_report,
    write_comparison,
    write_report,
)
from tests.reports.fakes import EXTRACTOR, fake_result

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def report_html():
    """The report of the full fake result, rendered once for the tests that only read it."""
    return render_report(fake_result())


def light(**kwargs) -> AuditResult:
    """A fake result without the inputs of the special plots, for tests about the rest of the page."""
    result = fake_result(**kwargs)
    for check in result.checks.values():
        check.details = {}
    del result.checks["membership"].metrics["epsilon_lower_bound"]
    return result


def embedded_images(html: str) -> list[Image.Image]:
    """Every <img> of the page, decoded (each must be a data: URL holding a PNG)."""
    sources = re.findall(r'<img [^>]*src="([^"]*)"', html)
    images = []
    for src in sources:
        assert src.startswith("data:image/png;base64,"), src[:60]
        images.append(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
    return images


def assert_offline(html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I), "a URL that would fetch"
    assert not re.search(r"https?://", html), "no external URL anywhere"
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_fmt():
    assert fmt(0.123456) == "0.1235"
    assert fmt(1077) == "1,077"
    assert fmt(None) == "\u2014"
    assert fmt(float("nan")) == "n/a"
    assert fmt(True) == "yes"
    assert fmt(35.0) == "35"
    assert fmt(2.5e-5) == "2.5e-05"


def test_image_reads_png_size_and_refuses_other_data():
    from dpaudit.audit.result import encode_png

    png = encode_png(np.zeros((28, 56), np.uint8))
    img = image(png, "c")
    assert (img["width"], img["height"]) == (56 * 5, 28 * 5) and img["pixelated"]  # 320 // 56 = 5
    big = image(encode_png(np.zeros((10, 400), np.uint8)))
    assert (big["width"], big["height"], big["pixelated"]) == (400, 10, False)
    assert image("not base64!") is None
    assert image(base64.b64encode(b"GIF89a....................").decode()) is None


def test_report_has_every_part(report_html):
    result, html = fake_result(), report_html
    assert_offline(html)
    for title in ("Fidelity", "Utility", "Similarity to training images", "Membership inference",
                  "Gradient matching (gradient inversion)", "Provenance", "Summary", "Warnings"):
        assert f">{title}</h2>" in html
    for check in result.checks.values():
        for name in check.metrics:
            assert f"<code>{name}</code>" in html
    # values, CIs and baselines as they should print
    assert '<td class="num">0.56</td>' in html and "[0.52, 0.6]" in html and '<td class="num">0.97</td>' in html
    # the attack table marks the strongest attack
    assert "nn_distance (strongest)" in html
    # provenance: split id, extractor hash, manifest, versions, seed
    for text in ("digits:s0:m1077:h360:0123456789ab", EXTRACTOR["sha256"], "noise_multiplier", "2.14.1", "dp-merf"):
        assert text in html
    assert "The synthetic set has 1000 images" in html
    assert "No gate policy was applied" in html


def test_report_images(report_html):
    html = report_html
    alts = re.findall(r'<img [^>]*alt="([^"]*)"', html)
    # summary samples; fidelity per-class + samples figure; utility per-class; similarity histogram +
    # worst pairs; membership ROC + epsilon; gradient matching grid
    assert alts == ["Samples", "Per class", "Samples", "Per class", "SSIM to the nearest training image",
                    "Distance to the nearest training image", "The most exposed members: the synthetic images closest to a member", "ROC curves",
                    "Empirical epsilon against the claim", "Reconstructions beside their nearest images"]
    # every figure under its own heading, which says what the alt text says
    for alt in alts:
        assert re.search(rf"<h3>{re.escape(str(escape(alt)))}</h3>\s*<figure>", html), alt
    images = embedded_images(html)
    assert all(im.size[0] > 0 for im in images)
    roc = images[alts.index("ROC curves")]
    assert roc.size[0] > 1.8 * roc.size[1]  # two panels side by side: linear and log-log


def test_sample_grid_from_the_synthetic_summary_first():
    from dpaudit.audit.result import encode_png

    result = fake_result()
    result.synthetic["samples_png"] = encode_png(np.full((12, 24), 200, np.uint8))
    html = render_report(result)
    first = embedded_images(html)[0]
    assert first.size == (24, 12)
    assert "samples_png" not in html  # shown as the grid, not dumped into the provenance table


def test_special_plots_follow_details_keys_not_check_names():
    result = fake_result()
    other = result.checks.pop("similarity")
    other.check, other.title = "my_similarity", ""  # a check of a third party, without a declaration
    result.checks["my_similarity"] = other
    html = render_report(result)
    assert 'alt="SSIM to the nearest training image"' in html
    assert html.index(">My similarity</h2>") > html.index(">Gradient matching (gradient inversion)</h2>")


def test_malformed_details_give_a_note_not_a_crash():
    result = fake_result()
    result.checks["similarity"].details["ssim_hist"] = {"edges": [0, 1]}
    result.checks["utility"].details["per_class"] = "nope"
    result.checks["fidelity"].figures["broken"] = {"caption": "x", "png": "AAAA"}
    html = render_report(result)
    assert "could not draw &#39;ssim_hist&#39;" in html
    assert "could not draw &#39;per_class&#39;" in html
    assert "figure &#39;broken&#39; is not a valid PNG" in html


def test_claim_violation_is_an_alert_at_the_top():
    result = fake_result(eps_lb=12.0, epsilon=10.0)
    assert result.checks["membership"].details["claim_violated"]
    for name in ("fidelity", "utility", "similarity"):
        result.checks[name].details = {}
    del result.checks["membership"].details["attacks"]
    html = render_report(result)
    alert = html.index('class="alert"')
    assert alert < html.index('id="summary"')
    assert "exceeds the claimed epsilon (10)" in html


def test_the_membership_checks_claim_warning_is_shown_once_as_the_alert():
    result = fake_result(eps_lb=12.0, epsilon=10.0)
    warning = "PRIVACY CLAIM REFUTED: membership inference proves epsilon >= 12.00 (test)."
    result.checks["membership"].details["claim_warning"] = warning
    result.warnings = [warning, "another warning"]
    html, shown = render_report(result), str(escape(warning))
    box = html[html.index('id="warnings"') : html.index('id="summary"')]
    assert box.count(shown) == 1
    assert box.index('class="alert"') < box.index(shown) < box.index("another warning")


def test_verdict_banner():
    rules = parse_policy({"rule": [{"metric": "membership.auc", "max": 0.6}, {"metric": "utility.tstr_accuracy", "min": 0.9}]})
    failing = render_report(light(), apply_policy(light(), rules))
    assert 'class="banner fail"' in failing and "FAIL: 1 of 2 rules broken" in failing
    assert failing.index('id="verdict"') < failing.index('id="summary"')
    passing = render_report(light(tstr=0.95), apply_policy(light(tstr=0.95), rules))
    assert 'class="banner pass"' in passing and "PASS: all 2 rules hold" in passing


def test_labels_and_file_names_are_escaped(tmp_path):
    result = fake_result(generator=EVIL, name=EVIL)
    result.warnings.append(EVIL)
    result.checks["fidelity"].metrics["fid"].meaning = EVIL
    result.checks["similarity"].figures["worst_pairs"]["caption"] = EVIL
    result.checks["membership"].details["attacks"][EVIL] = result.checks["membership"].details["attacks"].pop("density")
    result.feature_extractor["name"] = f'"><img src=x onerror=alert(1)>{EVIL}'
    html = render_report(result)
    assert "<script" not in html.lower() and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("&lt;script&gt;") >= 6

    a, b = tmp_path / f"{EVIL}.json", tmp_path / "b.json"
    result.save(a)
    other = fake_result(generator="other", seed=1)
    other.feature_extractor = result.feature_extractor
    other.save(b)
    out = tmp_path / "compare.html"
    run = CliRunner().invoke(cli, ["compare", str(a), str(b), "--out", str(out)], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    compared = out.read_text()
    assert "<script" not in compared.lower() and "&lt;script&gt;" in compared


def test_re_render_from_json_alone(tmp_path, report_html):
    path = fake_result().save(tmp_path / "result.json")
    run = CliRunner().invoke(cli, ["report", str(path)], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    # the JSON holds everything the report shows: the same page as from the result in memory
    assert (tmp_path / "result.html").read_text() == report_html

    (tmp_path / "policy.toml").write_text('[[rule]]\nmetric = "membership.auc"\nmax = 0.5\n')
    out = tmp_path / "gated.html"
    run = CliRunner().invoke(cli, ["report", str(path), "--out", str(out), "--policy", str(tmp_path / "policy.toml")])
    assert run.exit_code == 0 and 'class="banner fail"' in out.read_text()

    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something else"}')
    run = CliRunner().invoke(cli, ["report", str(bad)])
    assert run.exit_code == 2 and "not a dpaudit result" in run.output


def test_write_report_returns_the_path(tmp_path):
    path = write_report(light(), tmp_path / "deep" / "report.html")
    assert path.is_file() and path.read_text().startswith("<!DOCTYPE html>")


# ---- compare ----

def three():
    return [
        fake_result(generator="dp-merf", auc=0.56, eps_lb=0.4, tstr=0.81, fid=35.0, seed=0),
        fake_result(generator="dpsgd-gan", auc=0.70, eps_lb=2.5, tstr=0.60, fid=35.0, seed=1),
        fake_result(generator="pearl", auc=0.52, eps_lb=0.1, tstr=0.70, fid=80.0, seed=2),
    ]


def test_ranking_by_mean_rank():
    html = render_comparison(three(), ["a.json", "b.json", "c.json"])
    assert_offline(html)
    ranking = html[html.index('id="ranking"'):html.index('id="scatter"')]
    # ranks (1 best) on the declared headlines fid, tstr, near_copy_excess, auc, eps_lb, max_member_ssim:
    # dp-merf 1.5, 1, 2, 2, 2, 2 -> 1.75; dpsgd-gan 1.5, 3, 2, 3, 3, 2 -> 2.42; pearl 3, 2, 2, 1, 1, 2 -> 1.83
    rows = re.findall(r"<tr><td>(\d)</td><td>([^<]+)</td>.*?<td class=\"num\">([\d.]+)</td></tr>", ranking, re.S)
    assert rows == [("1", "dp-merf", "1.75"), ("2", "pearl", "1.83"), ("3", "dpsgd-gan", "2.42")]
    assert "0.81 (1)" in ranking and "35 (1.5)" in ranking


def test_comparison_parts(tmp_path):
    path = write_comparison(three(), tmp_path / "c.html", sources=["a.json", "b.json", "c.json"])
    html = path.read_text()
    alts = re.findall(r'<img [^>]*alt="([^"]*)"', html)
    assert alts == ["Privacy against utility", "samples of dp-merf", "samples of dpsgd-gan", "samples of pearl"]
    assert all(im.size[0] > 0 for im in embedded_images(html))
    assert "empirical epsilon (lower bound)" in html
    for source in ("a.json", "b.json", "c.json"):
        assert source in html


def test_utility_frontier_where_epsilons_differ():
    assert 'alt="Utility against epsilon"' not in render_comparison(three())  # one claimed epsilon: no frontier
    results = [fake_result(generator=g, epsilon=eps, tstr=tstr, seed=i) for i, (g, eps, tstr) in
               enumerate([("dp-merf", 1.0, 0.7), ("dp-merf", 10.0, 0.8), ("pearl", 1.0, 0.6), ("pearl", 10.0, 0.75)])]
    html = render_comparison(results)
    assert re.search(r"<h3>Utility against epsilon</h3>\s*<figure>\s*<img [^>]*alt=\"Utility against epsilon\"", html)


def test_scatter_has_error_bars_where_the_metrics_have_intervals(monkeypatch):
    from dpaudit.reports import plots

    drawn = []
    real = plots.privacy_utility_scatter
    monkeypatch.setattr(plots, "privacy_utility_scatter", lambda points, **kw: drawn.append(points) or real(points, **kw))
    results = three()
    for r in results:
        del r.checks["membership"].metrics["epsilon_lower_bound"]
    render_comparison(results)
    label, x, y, x_ci, y_ci = drawn[0][0]
    assert (label, x, y) == ("dp-merf", 0.56, 0.81)
    assert x_ci == pytest.approx((0.52, 0.60)) and y_ci == pytest.approx((0.78, 0.84))


def test_scatter_falls_back_to_auc_then_to_a_note():
    results = three()
    for r in results:
        del r.checks["membership"].metrics["epsilon_lower_bound"]
    html = render_comparison(results)
    assert "Privacy (membership AUC) against utility" in html
    for r in results:
        del r.checks["utility"]
    assert 'alt="Privacy against utility"' not in render_comparison(results)


def test_duplicate_generator_names_are_told_apart():
    html = render_comparison([fake_result(seed=0), fake_result(seed=1)])
    assert "dp-merf #2" in html


@pytest.mark.parametrize(
    "change, what",
    [
        (lambda r: r.reference.update(split_id="digits:s1:m1077:h360:ffffffffffff"), "reference split_id"),
        (lambda r: r.feature_extractor.update(sha256="0" * 64), "feature extractor sha256"),
        (lambda r: r.feature_extractor.update(name="inception"), "feature extractor name"),
        (lambda r: r.reference["test"].update(fingerprint="9" * 64), "test fingerprint"),
    ],
)
def test_refuses_results_that_differ(change, what):
    a, b = fake_result(), fake_result(generator="other")
    change(b)
    with pytest.raises(DpauditError, match=what) as err:
        check_comparable([a, b], ["a.json", "b.json"])
    assert "a.json: " in str(err.value) and "b.json: " in str(err.value)


def test_compare_cli_refuses_with_exit_code_2(tmp_path):
    fake_result().save(tmp_path / "a.json")
    fake_result(split_id="digits:s1:m1077:h360:ffffffffffff").save(tmp_path / "b.json")
    runner = CliRunner()
    run = runner.invoke(cli, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "c.html")])
    assert run.exit_code == 2 and "differ in reference split_id" in run.output
    assert not (tmp_path / "c.html").exists()
    one = runner.invoke(cli, ["compare", str(tmp_path / "a.json")])
    assert one.exit_code == 2 and "at least two results" in one.output
    stray = runner.invoke(cli, ["compare", str(tmp_path / "a.json"), str(tmp_path / "a.json"), "--dataset", "digits"])
    assert stray.exit_code == 2 and "give --synthetic DIR too" in stray.output


def test_compare_profiles_differ_is_a_warning():
    a, b = fake_result(), fake_result(generator="b")
    b.profile = "standard"
    assert "different profiles (quick, standard)" in render_comparison([a, b])


@pytest.mark.slow
def test_compare_audits_synthetic_sets_first(tmp_path, digits):
    """`compare --synthetic A --synthetic B` audits both against one reference, then compares:
    a copy of the members nearly copies far more images than real images that are not members."""
    from dpaudit.images import save_images

    copies = save_images(digits.members.subset(range(200), name="copies"), tmp_path / "copies", "npz")
    fresh = save_images(digits.test.subset(range(200), name="fresh"), tmp_path / "fresh", "npz")
    fake_result(split_id="other:s0").save(tmp_path / "other.json")
    out = tmp_path / "compare.html"
    args = ["compare", "--synthetic", str(copies), "--synthetic", str(fresh), "--dataset", "digits",
            "--checks", "similarity", "--out", str(out)]
    run = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert run.exit_code == 0, run.output
    html = out.read_text()
    row = re.search(r"<code>similarity\.near_copy_share</code>.*?</tr>", html, re.S).group(0)
    copy_share, fresh_share = (float(v) for v in re.findall(r'<td class="num">([\d.]+)', row))
    assert copy_share == 1.0 and fresh_share < 0.5  # 8x8 digits: fresh real images often look alike too
    # a result file made against another split is refused beside them
    run = CliRunner().invoke(cli, [*args[:1], str(tmp_path / "other.json"), *args[1:]])
    assert run.exit_code == 2 and "reference split_id" in run.output
