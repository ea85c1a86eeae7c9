"""python -m benchmarks.ladder_tab: the ladder page's live training (peek/web/ladder.html), in headless chromium.

    rung 1   the wall time from pressing Train until the val loss is within 0.05 of its converged value,
             drawing and sampling included. The converged value is taken two ways: where the tab's own
             run ends (its last step), and where numpy_gpt.ladder ends a run 5 times as long at the same
             settings (float32), which shows how much further a longer run would have gone
    rung 2   steps a minute over --seconds of training in the tab, wall time (evaluations, drawing and
             sampling included), and the rate of the steps alone (the page's own count)

The page's files are the ones peek build writes (peek.build.ASSETS, peek.ladder_tab.write_ladder), served
by peek's own server from a temporary folder; the sizes are peek.ladder_tab.TAB's.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from numpy_gpt.machinery.cli import ArgumentParser, check_at_least, run_cli
from numpy_gpt.machinery.errors import UserError

from .site import CHROMIUM_ARGS, serve

WITHIN = 0.05                   # nats: "within 0.05 of its converged value"


def write_page(folder, corpus):
    """The ladder page's files, as peek build writes them, into folder (with a stand-in index.html, which
    peek serve asks for)."""
    from peek.build import ASSETS, WEB
    from peek.ladder_tab import write_ladder
    folder.mkdir(parents=True, exist_ok=True)
    for name in ASSETS:
        shutil.copyfile(WEB / name, folder / name)
    (folder / "index.html").write_text('<!doctype html><title>ladder</title><a href="ladder.html">the ladder</a>')
    return write_ladder(folder / "data", corpus)


def numpy_val(rung, steps, corpus):
    """numpy_gpt.ladder's val loss after a run of `steps` steps at the tab's sizes and settings (float32),
    on the page's fixed val batches."""
    from numpy_gpt import ladder
    from numpy_gpt.data import CharTokenizer, eval_batches
    from peek.ladder_tab import TAB, rung_settings, tab_text
    text, vocab = tab_text(Path(corpus).read_text(encoding="utf-8"))
    ids = CharTokenizer(vocab).encode(text)
    n = int(0.9 * len(ids))
    config, s = rung_settings(rung)
    params, _ = ladder.train_rung(rung, config, ids[:n], steps, seed=s["seed"], dtype=np.float32,
                                  batch_size=s["batch_size"], lr=s["lr"], min_lr=s["min_lr"],
                                  warmup_steps=s["warmup_steps"])
    batches = eval_batches(ids[n:], TAB["eval_batches"], s["batch_size"], config.block_size, s["seed"], split=1)
    return float(np.mean([ladder.rung_forward(rung, params, config, x, y)[1] for x, y in batches]))


def measure(url, seconds):
    """-> (rung 1's vals [(step, val, ms since Train)], its run's wall seconds and its seconds in steps and
    evaluations; rung 2's (steps, wall seconds, seconds in steps and evaluations, last val); chromium's
    version). Every time is the page's own (performance.now), from Train to the end or to Pause."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "ladder.html")
        page.wait_for_selector("#train-pause:not([disabled])", timeout=60_000)
        errors = page.locator("#error")
        page.click("#train-pause")
        page.wait_for_selector("#train-pause:text('Done')", timeout=600_000)
        one = page.evaluate("globalThis.ladderTab.runs.bigram")
        vals = [(step, val, when - one["started"]) for step, val, when in one["vals"]]   # ms since Train
        page.click("button[data-rung=attention]")
        page.wait_for_timeout(200)
        page.click("#train-pause")
        page.wait_for_timeout(1000 * seconds)
        if page.locator("body[data-running=true]").count():     # rung 2 may have reached its last step
            page.click("#train-pause")
        page.wait_for_selector("body[data-running=false]")
        two = page.evaluate("(({step, seconds, wall_seconds, vals}) => ({step, seconds, wall_seconds, "
                            "val: vals[vals.length - 1]}))(globalThis.ladderTab.runs.attention)")
        if errors.is_visible():
            raise UserError(f"the ladder page failed: {errors.text_content()}")
        version = browser.version
        browser.close()
    return vals, one["wall_seconds"], one["seconds"], (two["step"], two["wall_seconds"], two["seconds"], two["val"]), version


def parser():
    p = ArgumentParser(prog="python -m benchmarks.ladder_tab", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=None,
                   help="tinyshakespeare.txt (default: $TINY_LLM_CORPUS, else data/tinyshakespeare.txt)")
    p.add_argument("--seconds", type=int, default=30, help="how long rung 2 trains in the tab")
    p.add_argument("--longer", type=int, default=5,
                   help="numpy_gpt's reference run for rung 1 is this many times the tab's steps")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    check_at_least(args, 1, "--seconds", "--longer")
    from peek.ladder_tab import TAB, find_corpus
    corpus = Path(args.corpus) if args.corpus else find_corpus()
    if corpus is None or not corpus.is_file():
        raise UserError("tinyshakespeare not found: pass --corpus PATH, or set TINY_LLM_CORPUS, or put it at "
                        "data/tinyshakespeare.txt")
    if shutil.which("chromium") is None:
        raise UserError("no chromium on PATH: apt-get install chromium")
    steps1 = TAB["rungs"]["bigram"]["steps"]
    print(f"numpy_gpt: rung 1 for {args.longer * steps1:,} steps ...", file=sys.stderr)
    longer = numpy_val("bigram", args.longer * steps1, corpus)
    with tempfile.TemporaryDirectory() as tmp:
        write_page(Path(tmp) / "site", corpus)
        server, url = serve(Path(tmp) / "site")
        try:
            print(f"chromium: rung 1 to its end, then rung 2 for {args.seconds} s ...", file=sys.stderr)
            vals, wall1, alone1, (steps2, wall2, alone2, val2), version = measure(url, args.seconds)
        finally:
            server.terminate()
            server.wait()
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "unknown CPU")
    first, end = vals[0][1], vals[-1][1]
    vals = vals[1:]                                 # step 0's was measured before Train was pressed

    def reached(target):
        return next(((step, ms) for step, val, ms in vals if val <= target + WITHIN), None)

    s2 = TAB["rungs"]["attention"]
    print(f"The ladder page, served from 127.0.0.1, headless Chromium {version}, on {cpu}; batches of "
          f"{TAB['batch_size']} x {TAB['block_size']} characters, rung 2 {TAB['n_embd']} wide.\n")
    print("| measure | value |\n|---|---|")
    print(f"| rung 1: val loss at step 0, and at the tab's last step ({steps1:,}) | {first:.3f}, {end:.3f} |")
    print(f"| rung 1: val loss of numpy_gpt after {args.longer * steps1:,} steps, same settings | {longer:.3f} |")
    for name, target in (("the tab's last step", end), (f"numpy_gpt's {args.longer * steps1:,} steps", longer)):
        hit = reached(target)
        print(f"| rung 1: from Train to within {WITHIN} of {name} ({target + WITHIN:.3f}) | " +
              (f"{hit[1] / 1000:.1f} s (step {hit[0]:,}) |" if hit else "never |"))
    print(f"| rung 1: its whole run of {steps1:,} steps | {wall1:.1f} s wall, {alone1:.1f} s of it in steps and "
          f"evaluations |")
    print(f"| rung 2: steps a minute over {wall2:.0f} s, wall (evaluations, drawing, samples included) | "
          f"{60 * steps2 / wall2:,.0f} ({steps2:,} steps) |")
    print(f"| rung 2: steps a minute, the steps and evaluations alone | {60 * steps2 / alone2:,.0f} |")
    print(f"| rung 2: val loss at step {val2[0]:,} (of the tab's {s2['steps']:,}) | {val2[1]:.3f} |")
    return 0


if __name__ == "__main__":
    run_cli(main)
