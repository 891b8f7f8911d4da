"""The quickstart's report as a new user sees it (issue 16, items 5-7): enough datasets for the
critical-difference diagram, no Python in refusal notes, and the HTML page checked in a real headless
Chromium — no horizontal scroll at 1,280 px, every image loads."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from expkit.cli import app
from expkit.spec import load_spec

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "quickstart"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH = 1280


@pytest.fixture(scope="module")
def quickstart_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart as shipped but smaller (3 replicates, 300 evaluations), run and reported through the CLI."""
    root = tmp_path_factory.mktemp("quickstart")
    example = root / "quickstart"
    shutil.copytree(QUICKSTART, example)
    spec_path = example / "experiment.yml"
    doc = yaml.safe_load(spec_path.read_text())
    doc["spec"]["replicates"] = 3
    doc["spec"]["params"]["budget"] = 300
    spec_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    runner = CliRunner()
    store = str(root / "runs")
    ran = runner.invoke(app, ["run", str(spec_path), "--store", store])
    assert ran.exit_code == 0, ran.output
    out = root / "report"
    res = runner.invoke(app, ["results", "latest", "--store", store, "-o", str(out), "--format", "png"])
    assert res.exit_code == 0, res.output
    return out


# ----------------------------------------------------------------------------------- item 5: the quickstart


def test_quickstart_has_enough_functions_for_the_cd_diagram() -> None:
    names = [d.name for d in load_spec(QUICKSTART / "experiment.yml").experiment.spec.datasets]
    assert len(names) >= 5, names  # the CD diagram is refused below 5 datasets
    source = (QUICKSTART / "optimizers.py").read_text()
    for name in names:
        assert f'"{name}":' in source, f"optimizers.py lacks the function {name}"


def test_quickstart_report_shows_the_cd_diagram_without_python_in_notes(quickstart_report: Path) -> None:
    assert (quickstart_report / "cd-diagram.png").is_file()
    html = (quickstart_report / "report.html").read_text()
    md = (quickstart_report / "report.md").read_text()
    for text in (html, md):
        assert "force=True" not in text and "critical-difference diagram: only" not in text


# ----------------------------------------------------------------------------------- item 7: readable HTML


def test_report_summary_is_headings_tables_and_paragraphs(quickstart_report: Path) -> None:
    html = (quickstart_report / "report.html").read_text()
    summary = html.split("<h2>Summary</h2>", 1)[1].split("<h2>", 1)[0]
    assert "<pre" not in summary
    assert "<h3>" in summary and '<table class="summary">' in summary and "<p>" in summary
    assert '<th scope="row">sphere</th>' in summary  # one row per dataset
    assert "<li>" in summary  # the notes


def test_report_leaves_out_implementation_remarks_and_the_unused_image(quickstart_report: Path) -> None:
    html = (quickstart_report / "report.html").read_text()
    md = (quickstart_report / "report.md").read_text()
    assert "microseconds" not in html and "0.1-2 s per pair" not in html and "about 0.1 s" not in html
    digest = re.search(r"sha256:[0-9a-f]{64}", (QUICKSTART / "experiment.yml").read_text())
    assert digest is not None
    assert digest.group(0) not in html and digest.group(0) not in md  # a local run never used the image
    assert "was not used" in html


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return dict(msg["result"])

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")


def _page_socket(port: int, deadline: float) -> str:
    """The websocket URL of the browser's first page, once the DevTools endpoint answers."""
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as resp:
                pages = [p for p in json.load(resp) if p.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("chromium's DevTools endpoint did not answer within 60 s")
        time.sleep(0.2)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_report_fits_1280_px_and_every_image_loads_in_headless_chromium(
    quickstart_report: Path, tmp_path: Path
) -> None:
    pytest.importorskip("websocket", reason="websocket-client is needed to drive chromium (installed with kubernetes)")
    report = quickstart_report / "report.html"
    port = _free_port()
    args = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={WIDTH},900",
        f"--remote-debugging-port={port}",
        "about:blank",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        page = _DevTools(_page_socket(port, time.monotonic() + 60))
        page.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=900, deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=report.as_uri())
        for _ in range(600):  # until the report (not about:blank) and its images have loaded
            if page.evaluate(
                f"document.URL === {json.dumps(report.as_uri())} && document.readyState === 'complete' && "
                "[...document.images].every(i => i.complete)"
            ):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the report did not load in chromium within 60 s")
        facts = page.evaluate(
            "({scrollWidth: document.documentElement.scrollWidth, clientWidth: document.documentElement.clientWidth,"
            " images: [...document.images].map(i => [i.alt, i.naturalWidth]),"
            " scrolling: [...document.querySelectorAll('body *')].filter(e => e.scrollWidth > e.clientWidth + 1 &&"
            " ['auto', 'scroll'].includes(getComputedStyle(e).overflowX)).map(e => e.tagName),"
            " wide: [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > "
            f"{WIDTH} + 0.5).map(e => e.tagName + ' ' + (e.textContent || '').slice(0, 60))}})"
        )
        shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        (quickstart_report / "report-screenshot.png").write_bytes(__import__("base64").b64decode(shot["data"]))
        page.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
    assert facts["scrollWidth"] <= WIDTH, f"the page scrolls sideways: {facts['scrollWidth']} px; {facts['wide'][:5]}"
    assert not facts["scrolling"], f"blocks that scroll sideways at {WIDTH} px: {facts['scrolling']}"
    assert len(facts["images"]) >= 4, facts["images"]  # box plots, convergence, CD diagram, win/tie/loss
    broken = [alt for alt, width in facts["images"] if not width > 0]
    assert not broken, f"images that do not load: {broken}"
    assert any(alt.startswith("Critical-difference") for alt, _ in facts["images"])


# ----------------------------------------------------------------------------------- item 6: --log-scale


def test_results_log_scale_option(quickstart_report: Path, tmp_path: Path) -> None:
    store = str(quickstart_report.parent / "runs")
    runner = CliRunner()
    bad = runner.invoke(app, ["results", "latest", "--store", store, "--log-scale", "sometimes", "-o", str(tmp_path)])
    assert bad.exit_code == 2 and "--log-scale" in bad.output and "auto, on or off" in bad.output
    off = runner.invoke(
        app, ["results", "latest", "--store", store, "--log-scale", "off", "--format", "png", "-o", str(tmp_path / "o")]
    )
    assert off.exit_code == 0, off.output
    on_box = (quickstart_report / "boxplots-best.png").read_bytes()
    assert (tmp_path / "o" / "boxplots-best.png").read_bytes() != on_box  # sphere spans decades: auto differs
