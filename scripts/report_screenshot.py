"""The screenshot of the top of a report that the README shows (docs/report-top.png): the page
in headless Chromium at 1280 x 800, the first screen only.

    dpaudit demo --out dpaudit-demo
    python scripts/report_screenshot.py dpaudit-demo/report.html docs/report-top.png
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.reports.cdp import find_chromium, open_page  # noqa: E402  (the browser test's DevTools client)


def main(report: str, out: str) -> None:
    chromium = find_chromium()
    if chromium is None:
        sys.exit("no Chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        page = open_page(chromium, Path(report).resolve().as_uri(), Path(profile), Path(out), width=1280, height=800,
                         full_page=False)
    if page["errors"]:
        sys.exit(f"the page logged errors: {page['errors']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
