"""Browser tests: playwright drives Debian's chromium against a site served from this machine.

Playwright's own browser download does not work here, so it launches the system chromium (apt
package `chromium`). A page is watched for four kinds of problem, each recorded as one line:
console errors, uncaught exceptions, failed requests (a network error or a status of 400 or more),
and requests to any other origin, which are also blocked, so nothing leaves the machine.

    from browser import PHONE, assert_no_problems, browser, browser_page, problems, screenshot, served, visit

    def test_index(browser, tmp_path):                  # browser: a module-scoped fixture, below
        with served("site/") as url, browser_page(browser, url) as page:
            assert_no_problems(visit(page, url))
            page.click("#sample")
            assert_no_problems(problems(page))          # everything since the page opened
            screenshot(page, tmp_path / "phone.png", PHONE)

Every wait has a timeout (TIMEOUT_S), so a broken page or server fails a test instead of hanging pytest.
"""
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 30                  # for any one wait: a server starting, a browser launching, a page loading
DESKTOP, PHONE = 1280, 390      # viewport widths for screenshots

# Headless, unsandboxed (CI runs as root in a container), and silent: no background requests of its own.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_or_skip():
    """-> the path of chromium. Without chromium or playwright the test is skipped, or fails where
    CI=true: CI must run the browser tests, not skip them."""
    path = shutil.which("chromium")
    try:
        import playwright.sync_api  # noqa: F401
        missing = None if path else "no chromium on PATH (apt-get install chromium)"
    except ImportError:
        missing = "the playwright package is not installed (pip install -e '.[dev]')"
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser tests, but {missing}", pytrace=False)
    if missing:
        pytest.skip(missing)
    return path


# ------------------------------------------------------------------------------------------------
# the server


@contextmanager
def served(directory, timeout=TIMEOUT_S):
    """Serve directory with peek.serve in a subprocess, on a free port -> its base URL,
    http://127.0.0.1:PORT/. The server is stopped on the way out."""
    code = ("import sys; from numpy_gpt.machinery.cli import run_cli; from peek.serve import serve; "
            "run_cli(lambda: serve(sys.argv[1], port=0))")
    with tempfile.TemporaryFile("w+") as stderr:
        server = subprocess.Popen([sys.executable, "-c", code, str(Path(directory).resolve())], cwd=ROOT,
                                  text=True, stdout=subprocess.PIPE, stderr=stderr)
        try:
            line = _first_line(server.stdout, timeout)
            url = re.search(r" at (http://127\.0\.0\.1:\d+/) ", line or "")
            if url is None:
                stderr.seek(0)
                why = line or stderr.read().strip() or f"no URL printed within {timeout}s"
                pytest.fail(f"peek.serve did not start: {why}", pytrace=False)
            yield url.group(1)
        finally:
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            server.stdout.close()


def _first_line(stream, timeout):
    """The stream's first line, or None if none comes within timeout seconds (readline has no timeout)."""
    lines = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


# ------------------------------------------------------------------------------------------------
# the browser and its pages


@contextmanager
def chromium_browser(timeout=TIMEOUT_S):
    """Start playwright and the system chromium, headless -> a playwright Browser."""
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True,
                                             timeout=timeout * 1000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser():
    """One browser for a test module (starting one takes about a second); each test opens its own page."""
    with chromium_browser() as b:
        yield b


@dataclass
class Problems:
    """What went wrong on a page, each entry one readable line."""
    console_errors: list = field(default_factory=list)     # console.error, and the browser's own errors
    page_errors: list = field(default_factory=list)        # uncaught exceptions, and a crashed page
    failed_requests: list = field(default_factory=list)    # network errors and statuses >= 400
    foreign_requests: list = field(default_factory=list)   # URLs off the local origin, all blocked

    def lines(self):
        kinds = [("console error", self.console_errors), ("uncaught exception", self.page_errors),
                 ("failed request", self.failed_requests), ("request off this machine", self.foreign_requests)]
        return [f"{kind}: {entry}" for kind, entries in kinds for entry in entries]

    def __bool__(self):
        return bool(self.lines())


_recorded = {}      # page -> its Problems, while browser_page() holds the page open


@contextmanager
def browser_page(browser, base_url, width=DESKTOP, timeout=TIMEOUT_S):
    """A fresh page (in its own context: no cookies or cache shared between tests) that records its
    problems from the start. Requests off base_url's origin are blocked and recorded."""
    origin = urlsplit(base_url)[:2]             # (scheme, host:port)

    def is_local(url):
        return url.startswith(("data:", "blob:", "about:")) or urlsplit(url)[:2] == origin

    # service workers blocked: their requests would slip past the route below
    context = browser.new_context(viewport={"width": width, "height": 800}, service_workers="block")
    context.set_default_timeout(timeout * 1000)
    found = Problems()

    def on_console(message):
        if message.type == "error":
            where = message.location
            found.console_errors.append(f"{message.text} ({where['url']}:{where['lineNumber']})"
                                        if where.get("url") else message.text)

    def on_page_error(error):
        frames = [line.strip() for line in (error.stack or "").splitlines() if line.strip().startswith("at ")]
        found.page_errors.append(f"{error.name}: {error.message}" + (f" ({frames[0]})" if frames else ""))

    def on_request_failed(request):
        if is_local(request.url):           # a blocked foreign request is recorded once, in block()
            found.failed_requests.append(f"{request.method} {request.url}: {request.failure}")

    def on_response(response):
        if response.status >= 400:
            found.failed_requests.append(f"{response.request.method} {response.url}: "
                                         f"{response.status} {response.status_text}")

    def block(route):
        found.foreign_requests.append(route.request.url)
        route.abort("blockedbyclient")

    def block_web_socket(ws):
        found.foreign_requests.append(ws.url)
        ws.close()

    # on the context, not the page, so that popups and workers are blocked too
    context.route(lambda url: not is_local(url), block)
    context.route_web_socket(lambda url: not is_local(url), block_web_socket)
    page = context.new_page()
    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("crash", lambda _: found.page_errors.append("the page crashed"))
    page.on("requestfailed", on_request_failed)
    page.on("response", on_response)
    _recorded[page] = found
    try:
        yield page
    finally:
        del _recorded[page]
        context.close()


def problems(page):
    """Everything the page has recorded since browser_page() opened it."""
    return _recorded[page]


def visit(page, url):
    """Load url and wait until the network has been idle for half a second -> the page's Problems."""
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    return problems(page)


def assert_no_problems(found):
    """Fail with one line per problem, if there are any."""
    if found:
        pytest.fail("the page has problems:\n  " + "\n  ".join(found.lines()), pytrace=False)


def screenshot(page, path, width, height=800):
    """A full-page PNG at this viewport width (DESKTOP or PHONE) -> path. The viewport stays resized."""
    page.set_viewport_size({"width": width, "height": height})
    page.screenshot(path=str(path), full_page=True)
    return Path(path)
