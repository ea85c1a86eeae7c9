"""The browser harness (tests/browser.py) on tiny pages that plant one problem each, and peek.serve."""
import re
import signal
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from browser import (DESKTOP, PHONE, assert_no_problems, browser, browser_page, chromium_or_skip,  # noqa: F401
                     problems, screenshot, served, visit)
from conftest import ROOT
from test_numpy_cli import assert_user_error, run

CLEAN = """<!doctype html>
<html><head><meta charset="utf-8"><title>clean</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="style.css"></head>
<body><h1>tiny-llm</h1><p id="out">not run</p><script type="module" src="app.mjs"></script></body></html>
"""
FILES = {"style.css": "body { font: 16px sans-serif; background: #fdf6e3; } h1 { color: #b58900; }",
         "app.mjs": "document.getElementById('out').textContent = 'the script ran';",
         "data.json": '{"vocab": 65}', "weights.bin": b"\x00\x01\x02\x03",
         "loss.svg": '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>',
         "plain.js": "console.log('hi');", "dot.png": b"\x89PNG\r\n\x1a\n"}


def site_with(tmp_path, script=""):
    """A tiny site: CLEAN's page plus FILES, with an inline script that plants a problem."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(CLEAN.replace("</body>", f"<script>{script}</script></body>"))
    for name, content in FILES.items():
        path = site / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return site


# ------------------------------------------------------------------------------------------------
# the harness: clean pages report nothing, and every planted problem is caught and named


def test_a_clean_page_reports_nothing(browser, tmp_path):
    with served(site_with(tmp_path)) as url, browser_page(browser, url) as page:
        found = visit(page, url)
        assert page.text_content("#out") == "the script ran"
        assert_no_problems(found)


@pytest.mark.parametrize("script, kind, expected", [
    ("console.error('planted: the weights are wrong')", "console_errors", "planted: the weights are wrong"),
    ("throw new RangeError('planted: bad index')", "page_errors", "RangeError: planted: bad index (at http"),
    ("fetch('missing.json')", "failed_requests", "missing.json: 404 File not found"),
    ("new Image().src = 'http://example.com/x.png'", "foreign_requests", "http://example.com/x.png"),
])
def test_each_planted_problem_is_caught_and_named(browser, tmp_path, script, kind, expected):
    with served(site_with(tmp_path, script)) as url, browser_page(browser, url) as page:
        found = visit(page, url)
    assert any(expected in line for line in getattr(found, kind)), found
    with pytest.raises(pytest.fail.Exception) as failure:
        assert_no_problems(found)
    assert expected in str(failure.value)


def test_a_request_off_the_machine_is_blocked_not_sent(browser, tmp_path):
    script = "fetch('https://cdn.example.org/lib.js').catch(e => document.title = 'blocked')"
    with served(site_with(tmp_path, script)) as url, browser_page(browser, url) as page:
        found = visit(page, url)
        assert page.title() == "blocked"
    assert found.foreign_requests == ["https://cdn.example.org/lib.js"]
    assert found.failed_requests == []          # named once, as what it is


def test_problems_after_the_visit_are_recorded_too(browser, tmp_path):
    with served(site_with(tmp_path)) as url, browser_page(browser, url) as page:
        assert_no_problems(visit(page, url))
        with page.expect_event("pageerror"):
            page.evaluate("setTimeout(() => { throw new Error('later') }, 0)")
        assert [line.split(" (at ")[0] for line in problems(page).page_errors] == ["Error: later"]


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])           # the IHDR chunk: width, height


def test_screenshots_are_full_page_at_the_given_width(browser, tmp_path):
    site = site_with(tmp_path, "document.body.style.height = '3000px'")
    with served(site) as url, browser_page(browser, url) as page:
        visit(page, url)
        desktop = screenshot(page, tmp_path / "desktop.png", DESKTOP)
        phone = screenshot(page, tmp_path / "phone.png", PHONE)
    assert png_size(desktop)[0] == 1280 and png_size(desktop)[1] >= 3000
    assert png_size(phone)[0] == 390 and png_size(phone)[1] >= 3000


def test_served_says_why_the_server_did_not_start(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="no site at .*python -m peek build"):
        with served(tmp_path / "nowhere"):
            pass


def test_without_chromium_a_browser_test_skips_but_fails_in_ci(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no chromium"):
        chromium_or_skip()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser tests"):
        chromium_or_skip()


# ------------------------------------------------------------------------------------------------
# peek.serve


def get(url):
    """-> (status, headers) of a GET, 4xx included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


@pytest.mark.parametrize("name, content_type", [
    ("", "text/html"), ("index.html", "text/html"), ("app.mjs", "text/javascript"),
    ("plain.js", "text/javascript"), ("style.css", "text/css"), ("data.json", "application/json"),
    ("weights.bin", "application/octet-stream"), ("dot.png", "image/png"), ("loss.svg", "image/svg+xml"),
])
def test_content_types_and_no_cache(tmp_path, name, content_type):
    with served(site_with(tmp_path)) as url:
        status, headers = get(url + name)
    assert status == 200
    assert headers.get_content_type() == content_type
    assert headers["Cache-Control"] == "no-cache"


def test_a_missing_file_is_404(tmp_path):
    with served(site_with(tmp_path)) as url:
        assert get(url + "nothing.json")[0] == 404


SERVE = ("import argparse, sys; from numpy_gpt.machinery.cli import run_cli; "
         "from peek.serve import add_serve_arguments, run_serve; "
         "p = argparse.ArgumentParser(); add_serve_arguments(p); run_cli(lambda: run_serve(p.parse_args()))")


def test_prints_the_real_url_stays_quiet_and_stops_cleanly_on_ctrl_c(tmp_path):
    site = site_with(tmp_path)
    server = subprocess.Popen([sys.executable, "-c", SERVE, "--dir", str(site), "--port", "0"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              # Python only turns SIGINT into KeyboardInterrupt if it was not ignored
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = server.stdout.readline()
        match = re.fullmatch(r"serving (.+) at http://127\.0\.0\.1:(\d+)/ \(Ctrl-C to stop\)\n", line)
        assert match and match[1] == str(site) and int(match[2]) > 0, line
        assert get(f"http://127.0.0.1:{match[2]}/")[0] == 200
        assert get(f"http://127.0.0.1:{match[2]}/missing")[0] == 404
        server.send_signal(signal.SIGINT)
        stdout, stderr = server.communicate(timeout=10)
    finally:
        server.kill()
    assert server.returncode == 0 and "Traceback" not in stderr
    assert stderr.strip() == "stopped"          # and no line per request


def test_bad_input_is_one_line(tmp_path):
    site = site_with(tmp_path)
    assert_user_error(run("-c", SERVE, "--dir", str(tmp_path / "nowhere")),
                      "run `python -m peek build` first")
    (tmp_path / "empty").mkdir()
    assert_user_error(run("-c", SERVE, "--dir", str(tmp_path / "empty")), "has no index.html")
    for port in ("-1", "65536"):
        assert_user_error(run("-c", SERVE, "--dir", str(site), "--port", port), "--port must be in 0..65535")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert_user_error(run("-c", SERVE, "--dir", str(site), "--port", port),
                          f"port {port} on 127.0.0.1 is in use")
