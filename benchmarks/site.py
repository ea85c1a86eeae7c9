"""python -m benchmarks.site: peek's site in headless chromium, measured.

    size         every file of the built site, and the total
    first paint  first-contentful-paint of each page, served from 127.0.0.1 (the browser's own figure)
    playground   characters/s of the playground's generation with the KV cache, as the page itself
                 times it (500 characters from ROMEO:, streamed into the page), median of --repeats;
                 and the same for as many characters as fit in one window (block_size), where the
                 window never slides and every character is one cached step; and how many of the
                 windows a Web Worker primed ahead, on the second core (peek/web/ahead.js)
    products     the multiply-adds/s of kid.js's own Linear (linear_forward) in the same tab, alone, on
                 one layer's four weights: with the rows of the prefill that re-primes a slid window,
                 and with the single row of a decode. They bound the playground: were every
                 multiply-add of a run that fast, and nothing else took time, it would write that many
                 characters/s, on one core, or with the worker's share done on another

--screenshots DIR also saves every page, 1280 pixels wide, the playground after its last run.

Builds the site from --checkpoint into a temporary folder, serves it with peek's own server, and
drives Debian's chromium through playwright (pip install -e '.[dev]'; apt-get install chromium).
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from numpy_gpt.machinery.checkpoint import load_weights
from numpy_gpt.machinery.cli import ArgumentParser, check_at_least, check_output, run_cli
from numpy_gpt.machinery.errors import UserError

PROMPT = "ROMEO:"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def serve(folder):
    """peek serve on a free port -> (process, base URL)."""
    proc = subprocess.Popen([sys.executable, "-m", "peek", "serve", "--dir", str(folder), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if " at http" not in line:
        proc.kill()
        raise UserError(f"peek serve did not start: {line.strip() or 'no output'}")
    return proc, line.split(" at ")[1].split()[0]


# kid.js's linear_forward, timed in the page on one layer's four weight shapes (c_attn, attn.c_proj, c_fc,
# mlp.c_proj; (out, in) as torch stores them) with `rows` rows of input: after a warm-up for the JIT,
# as many rounds as fit in `seconds` -> multiply-adds per second
PRODUCT_RATE = """async ([rows, C, seconds]) => {
  const { linear_forward } = await import("./kid.js");
  const shapes = [[3 * C, C], [C, C], [4 * C, C], [C, 4 * C]];
  const weights = shapes.map(([o, i]) => Float32Array.from({ length: o * i }, (_, j) => Math.sin(j) / 8));
  const biases = shapes.map(([o]) => new Float32Array(o));
  const inputs = shapes.map(([, i]) => Float64Array.from({ length: rows * i }, (_, j) => Math.cos(j)));
  const layer = () => shapes.forEach(([o], k) => linear_forward(inputs[k], weights[k], biases[k], o));
  for (const warm = performance.now(); performance.now() - warm < 300; ) layer();
  let rounds = 0;
  const start = performance.now();
  do { layer(); rounds++; } while (performance.now() - start < seconds * 1000);
  return rounds * rows * 12 * C * C / ((performance.now() - start) / 1000);
}"""


def measure(site, repeats, lengths, n_embd, product_rows, shots=None):
    """-> (first paint of each page in ms, {length: [playground characters/s of each run]}, {length: the
    set of the runs' "windows primed ahead of windows primed"}, {rows: kid.js's Linear multiply-adds/s
    with that many rows, for width n_embd}, version)"""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise UserError("benchmarks.site needs playwright: pip install -e '.[dev]'") from None
    chromium = shutil.which("chromium")
    if chromium is None:
        raise UserError("benchmarks.site needs Debian's chromium: apt-get install chromium")
    proc, url = serve(site)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            paints = {}
            for page_file in sorted(site.glob("*.html"), key=lambda f: (len(f.name), f.name)):
                page = browser.new_page()
                page.goto(url + page_file.name, wait_until="load")
                page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0",
                                       timeout=30_000)
                paints[page_file.name] = page.evaluate(
                    "performance.getEntriesByName('first-contentful-paint')[0].startTime")
                page.close()
            page = browser.new_page()
            page.goto(url + "10-playground.html")
            page.wait_for_selector("body[data-ready=yes]", timeout=60_000)
            page.fill("#play-prompt", PROMPT)
            rates = {length: [] for length in lengths}
            windows = {length: set() for length in lengths}     # "primed ahead of primed", of each run
            for i in range(repeats + 1):                         # the first round warms up the JIT
                for length in lengths:                           # taken in turn, so drift hits both alike
                    page.fill("#play-length", str(length))
                    page.fill("#play-seed", str(i))
                    page.click("#play-generate")
                    page.wait_for_selector("#play-output[data-done=yes]", timeout=120_000)
                    rate = float(page.get_attribute("#play-output", "data-chars-per-second"))
                    if i:
                        rates[length].append(rate)
                        windows[length].add(page.get_attribute("#play-output", "data-windows"))
            products = {rows: page.evaluate(PRODUCT_RATE, [rows, n_embd, 1.0]) for rows in product_rows}
            if shots is not None:
                shoot(browser, page, url, site, shots)
            version = browser.version
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return paints, rates, windows, products, version


def shoot(browser, playground, url, site, shots):
    """Full-page screenshots of every page into shots/, 1280 pixels wide; the playground as it is."""
    shots.mkdir(parents=True, exist_ok=True)
    playground.set_viewport_size({"width": 1280, "height": 800})
    playground.screenshot(path=str(shots / "10-playground.png"), full_page=True)
    for page_file in sorted(site.glob("*.html")):
        if page_file.name == "10-playground.html":
            continue
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url + page_file.name)
        if page_file.name != "index.html":
            page.wait_for_selector("body[data-ready=yes]", timeout=60_000)
        page.screenshot(path=str(shots / page_file.name.replace(".html", ".png")), full_page=True)
        page.close()


def extend(config, cached, T):
    """The multiply-adds of kid.js's gpt_extend over positions cached..T-1, on top of a KV cache that
    holds the first `cached`: a prefill is extend(config, 0, T). A position t (from 0) attending to t + 1
    keys costs 2 (t + 1) C in attention; a Linear costs its weight's size a row. The last layer runs its
    queries, MLP and head for position T - 1 only; its other positions need only their keys and values."""
    L, C, V = config.n_layer, config.n_embd, config.vocab_size
    layer = 12 * C * C                                  # c_attn 3C^2, c_proj C^2, c_fc and mlp.c_proj 4C^2 each
    attend = lambda t: 2 * (t + 1) * C                  # noqa: E731  scores and att @ v, over all heads
    rest = (L - 1) * sum(layer + attend(t) for t in range(cached, T))
    return rest + (T - cached) * 3 * C * C + (layer - 3 * C * C) + attend(T - 1) + V * C


def multiply_adds(config, prompt_len, length):
    """The playground's arithmetic for length characters after a prompt of prompt_len, counted as
    kid.js does it: -> (multiply-adds in prefills, in one-position decodes, the number of prefills,
    the multiply-adds of the prefills that the worker takes off the tab).

    The schedule is numpy_gpt.sampling.generate's: one prefill of the prompt, then a forward per new
    character (also after the last, as the generator runs to its end), each a decode, or where the
    character does not fit, a prefill of the window's last 3/4. The worker (peek/web/ahead.js) primes
    each slid window's first positions, those known once the window before held keep tokens; the tab
    then extends the cache by the rest.
    """
    block = config.block_size
    keep = max(1, block * 3 // 4)
    skip = block + 1 - keep                             # the next window starts this far into the current one
    n = prompt_len
    start = max(0, n - block)
    prefills, decodes, count, worker = extend(config, 0, n - start), 0, 1, 0
    primed_ahead = max(n - start, keep) - skip         # the worker's rows of the first slid window
    for _ in range(length):
        n += 1
        if n - start > block:                           # the window slides: re-prime it
            start = n - keep
            prefills, count = prefills + extend(config, 0, keep), count + 1
            if primed_ahead > 0:                        # else the window is too short for a worker's part
                worker += extend(config, 0, keep) - extend(config, primed_ahead, keep)
            primed_ahead = keep - skip
        else:
            decodes += extend(config, n - start - 1, n - start)
    return prefills, decodes, count, worker


def parser():
    p = ArgumentParser(prog="python -m benchmarks.site", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="out/kid.npz", help="the kid the site is built from")
    p.add_argument("--repeats", type=int, default=5, help="timed playground runs (after one warm-up)")
    p.add_argument("--length", type=int, default=500, help="characters per playground run")
    p.add_argument("--screenshots", default=None, metavar="DIR",
                   help="also save a full-page screenshot of every page into DIR")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    check_at_least(args, 1, "--repeats", "--length")
    if args.screenshots is not None:
        check_output(args.screenshots, "--screenshots", folder=True)
    _, config, _, _ = load_weights(args.checkpoint)  # a bad checkpoint is refused before anything is built
    in_window = config.block_size - len(PROMPT)     # the prompt and these fill one window exactly
    lengths = ([in_window] if 0 < in_window < args.length else []) + [args.length]   # the screenshot: the last
    keep = max(1, config.block_size * 3 // 4)       # the rows of the prefill that re-primes a slid window
    from peek.__main__ import main as peek_main
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        print(f"building the site from {args.checkpoint} ...", file=sys.stderr)
        peek_main(["build", "--checkpoint", args.checkpoint, "--out", str(site)])
        sizes = {f.relative_to(site).as_posix(): f.stat().st_size for f in site.rglob("*") if f.is_file()}
        start = time.perf_counter()
        paints, rates, windows, products, version = measure(site, args.repeats, lengths, config.n_embd, [keep, 1],
                                                   Path(args.screenshots) if args.screenshots else None)
        print(f"measured in {time.perf_counter() - start:.0f} s with Chromium {version}", file=sys.stderr)
    total = sum(sizes.values())
    print(f"Site built from {args.checkpoint}, served from 127.0.0.1, headless Chromium {version}.\n")
    print("| measure | value |\n|---|---|")
    rates = dict(sorted(rates.items(), reverse=True))   # --length first
    for length, runs in rates.items():
        what = "in one window, no slide" if length == in_window else f"{PROMPT} and on"
        print(f"| playground generation, KV cache, {length} characters ({what}; median of {len(runs)}) | "
              f"{statistics.median(runs):,.0f} characters/s (min {min(runs):,.0f}, max {max(runs):,.0f}) |")
    for length, runs in rates.items():
        prefills, decodes, count, worker = multiply_adds(config, len(PROMPT), length)
        rate = (prefills + decodes) / (length / statistics.median(runs))
        print(f"| its arithmetic for {length} characters | {(prefills + decodes) / 1e9:.2f} G multiply-adds, "
              f"{prefills / (prefills + decodes):.0%} of them in {count} prefill(s); "
              f"{rate / 1e9:.2f} G multiply-adds/s at the median |")
        if count > 1:                                   # the window slid: the worker had a part
            print(f"| windows primed with the worker's help (peek/web/ahead.js), for {length} characters | "
                  f"{' / '.join(sorted(windows[length]))} in the runs; the worker's share, in parallel: "
                  f"{worker / 1e9:.2f} G multiply-adds |")
    print(f"| kid.js's Linear alone, in the same tab, on one layer's weights | {products[keep] / 1e9:.2f} G "
          f"multiply-adds/s with {keep} rows (a prefill), {products[1] / 1e9:.2f} with 1 (a decode) |")
    for length in rates:
        prefills, decodes, _, worker = multiply_adds(config, len(PROMPT), length)
        alone = length / (prefills / products[keep] + decodes / products[1])
        tab = length / ((prefills - worker) / products[keep] + decodes / products[1])
        print(f"| the playground for {length} characters, were all its multiply-adds that fast and nothing else "
              f"took time | {alone:,.0f} characters/s on one core; {tab:,.0f} with the worker's share off the tab |")
    print(f"| the site's total size ({len(sizes)} files) | {total / 1e6:.2f} MB |")
    biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    print(f"| its largest files | {', '.join(f'{n} {s / 1e6:.2f} MB' for n, s in biggest)} |")
    print(f"| time to first paint, median over {len(paints)} pages | {statistics.median(paints.values()):.0f} ms "
          f"(max {max(paints.values()):.0f} ms, {max(paints, key=paints.get)}) |")
    return 0


if __name__ == "__main__":
    run_cli(main)
