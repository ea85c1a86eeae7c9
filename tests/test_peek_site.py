"""python -m peek build, and the site in a real browser: every page loads clean, nothing leaves the
machine, the live steps respond, and the playground writes what numpy_gpt.sample writes.

Screenshots of every page, at desktop and phone widths, go to out/screenshots/ for a person to look at.
"""
import html
import inspect
import json
import re
import subprocess

import numpy as np
import pytest

from numpy_gpt.machinery.checkpoint import load_weights, save_weights
from numpy_gpt.config import GPTConfig
from numpy_gpt import layers, model
from numpy_gpt.model import gpt_decode, gpt_prefill, init_params, new_kv_cache, param_shapes
from numpy_gpt.sampling import generate, pick
from peek.build import STEPS, page_name

from browser import (DESKTOP, PHONE, assert_no_problems, browser, browser_page, chromium_or_skip, problems,  # noqa: F401
                     screenshot, served, visit)
from conftest import ROOT
from test_numpy_cli import assert_user_error, run

SHOTS = ROOT / "out" / "screenshots"
PAGES = ["index.html"] + [page_name(n) for n in range(1, len(STEPS) + 1)]


def trained_kid(folder, corpus):
    """A small kid trained by numpy_gpt for a few hundred steps on tinyshakespeare, with its log."""
    text = folder / "shakespeare.txt"
    text.write_text(corpus.read_text(encoding="utf-8")[:200_000])
    out = folder / "run"
    result = run("-m", "numpy_gpt.train", "--data", str(text), "--out", str(out), "--steps", "150",
                 "--eval-interval", "50", "--lr", "1e-2", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
                 "--block-size", "32", "--batch-size", "16", "--eval-batches", "4", "--eval-train-batches", "4",
                 "--dropout", "0")
    assert result.returncode == 0, result.stderr
    return out / "kid.npz", text


@pytest.fixture(scope="module")
def site(tmp_path_factory, corpus):
    folder = tmp_path_factory.mktemp("peek-site")
    checkpoint, text = trained_kid(folder, corpus)
    parity = folder / "parity.json"
    parity.write_text(json.dumps({"dtype": "float64", "weights": "kid.npz", "ok": True, "sections": [
        {"section": "activations", "tensors": 30, "worst": "h.1.attn.y", "max_rel": 1.5e-15, "tol": 1e-12, "ok": True}]}))
    result = run("-m", "peek", "build", "--checkpoint", str(checkpoint), "--data", str(text),
                 "--parity", str(parity), "--out", str(folder / "site"))
    assert result.returncode == 0, result.stderr
    return {"dir": folder / "site", "checkpoint": checkpoint}


def test_build_writes_a_self_contained_site(site):
    files = sorted(p.relative_to(site["dir"]).as_posix() for p in site["dir"].rglob("*") if p.is_file())
    assert set(PAGES) <= set(files)
    assert {"kid.js", "rng.js", "site.js", "dom.js", "style.css", "data/peek.json", "data/weights.bin", "data/parity.json"} <= set(files)
    absolute = re.compile(r"""(?:src|href)\s*=\s*["']?(?:[a-z]+:)?/|(?:from|import|fetch\()[ \t]*["'](?:[a-z]+:)?/|url\(["']?(?:[a-z]+:)?//""")
    for name in files:
        if name.endswith((".html", ".js", ".css")):
            text = (site["dir"] / name).read_text()
            assert not absolute.findall(text), (name, absolute.findall(text))       # relative URLs only
    block = html.unescape((site["dir"] / page_name(6)).read_text())
    for function in ("def layernorm_forward", "def layernorm_backward", "def attention_backward", "def gpt_backward"):
        assert function in block                                              # numpy_gpt's own source
    assert inspect.getsource(layers.layernorm_backward).rstrip() in block
    assert inspect.getsource(model.gpt_forward).rstrip() in block
    behind = html.unescape((site["dir"] / page_name(9)).read_text())     # the one-file trainer, whole, or a line
    kid_py = ROOT / "torch_gpt" / "kid.py"
    if kid_py.is_file():
        assert kid_py.read_text(encoding="utf-8") in behind
    else:
        assert "was not in the repository this site was built from" in " ".join(behind.split())


def test_every_page_loads_clean_with_screenshots(browser, site):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with served(site["dir"]) as url:
        for name in PAGES:
            for width, tag in ((DESKTOP, "desktop"), (PHONE, "phone")):
                with browser_page(browser, url, width=width) as page:
                    assert_no_problems(visit(page, url + name))
                    if name != "index.html":
                        page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
                    if name == page_name(10):                                 # the playground, after writing
                        page.click("#play-generate")
                        page.wait_for_selector("#play-output[data-done=yes]", timeout=60_000)
                    assert page.locator("#error").is_hidden(), page.locator("#error").text_content()
                    assert page.evaluate("document.documentElement.scrollWidth") <= width + 1, f"{name} overflows at {width}px"
                    if width == PHONE:
                        assert_legible(page, name)
                    page.evaluate("window.scrollTo(0, 0)")                     # the sticky bar at the top, once
                    screenshot(page, SHOTS / f"{name[:-5]}-{tag}.png", width)
                    assert_no_problems(problems(page))


# Every visible piece of text on the page with its size in CSS pixels as drawn: an SVG's text is scaled
# by the SVG's transform to the screen (getScreenCTM), so a chart drawn small is caught too.
TEXT_SIZES = """() => {
  const found = [], walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, e = node.parentElement;
    if (!node.textContent.trim() || !e || !e.getClientRects().length) continue;
    const style = getComputedStyle(e);
    if (style.visibility === "hidden" || style.opacity === "0") continue;
    let size = parseFloat(style.fontSize);
    if (e instanceof SVGElement) { const m = e.getScreenCTM(); if (m) size *= Math.hypot(m.a, m.b); }
    found.push([size, node.textContent.trim().slice(0, 40), e.tagName.toLowerCase()]);
  }
  return found;
}"""


def assert_legible(page, name, smallest=11):
    """No text on the page smaller than `smallest` CSS pixels."""
    sizes = page.evaluate(TEXT_SIZES)
    assert sizes, f"{name}: no text found"
    small = sorted(s for s in sizes if s[0] < smallest - 1e-6)
    assert not small, f"{name}: {len(small)} pieces of text under {smallest}px, e.g. {small[:3]}"


def test_no_text_under_11_px_on_a_phone_in_any_view(browser, site):
    """The views a reader opens by a click, at 390 px: each part of step 6, step 5's large map, step 9's
    calculator at nanoGPT's size, step 10's raw bars."""
    with served(site["dir"]) as url, browser_page(browser, url, width=PHONE) as page:
        visit(page, url + page_name(6))
        page.wait_for_selector("body[data-ready=yes]")
        parts = page.eval_on_selector_all("#block-diagram .part", "gs => [...new Set(gs.map(g => g.dataset.part))]")
        assert len(parts) == 9
        for part in parts:
            page.locator(f"#block-diagram .part[data-part={part}]").first.click()
            section = page.locator(f".part-code[data-part={part}]")
            assert section.is_visible() and section.locator(".part-numbers").inner_text().strip(), part
            assert "def " in section.locator("pre.code").text_content(), part      # its code, forward and backward
            assert_legible(page, f"step 6, {part}")
        visit(page, url + page_name(5))
        page.wait_for_selector("body[data-ready=yes]")
        page.locator("#attention-grid .head").last.click()
        assert_legible(page, "step 5, the last head")
        visit(page, url + page_name(9))
        page.wait_for_selector("body[data-ready=yes]")
        page.click("[data-preset=nanogpt]")
        assert_legible(page, "step 9 at nanoGPT's size")
        visit(page, url + page_name(10))
        page.wait_for_selector("body[data-ready=yes]")
        page.fill("#play-length", "40")
        page.click("#play-generate")
        page.wait_for_selector("#play-output[data-done=yes]")
        page.check("#play-raw")
        assert_legible(page, "step 10, raw bars")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE + 1
        assert_no_problems(problems(page))


def test_the_pages_opened_as_files_say_how_to_serve_them(browser, site):
    """Opened from file:// a browser refuses the pages' module and their fetches: each page says, in one
    visible line, to run python -m peek serve. Served, the line is gone."""
    for name in ("index.html", page_name(5)):
        file_url = (site["dir"] / name).resolve().as_uri()
        with browser_page(browser, file_url) as page:
            page.goto(file_url, wait_until="load")
            notice = page.locator("#file-notice")
            assert notice.is_visible(), name
            assert "python -m peek serve" in notice.inner_text()
    with served(site["dir"]) as url, browser_page(browser, url) as page:
        for name in ("index.html", page_name(5)):
            assert_no_problems(visit(page, url + name))
            assert page.locator("#file-notice").is_hidden(), name


def test_behind_the_scenes_gives_the_runs_own_time(browser, site):
    """Page 9's wall time is the log's last elapsed_s: in seconds for a run this short (in minutes it
    would read 0.0), in minutes for one over a minute."""
    elapsed = json.loads((site["checkpoint"].parent / "log.jsonl").read_text().splitlines()[-1])["elapsed_s"]
    assert elapsed < 60
    with served(site["dir"]) as url, browser_page(browser, url) as page:
        visit(page, url + page_name(9))
        page.wait_for_selector("body[data-ready=yes]")
        assert f"{elapsed:.1f} seconds, evaluations included" in page.locator("main").inner_text()


def test_live_steps_respond(browser, site):
    with served(site["dir"]) as url, browser_page(browser, url) as page:
        visit(page, url + page_name(5))
        page.wait_for_selector("body[data-ready=yes]")
        assert page.locator("#attention-grid canvas").count() == 4              # 2 layers x 2 heads
        page.fill("#attention-prompt", "KING RICHARD")
        assert "12 positions" in page.text_content("#attention-status")
        page.fill("#attention-prompt", "ROMEO{}")
        assert "2 character(s) not in the kid's vocabulary" in page.text_content("#attention-status")
        assert '"{"' in page.text_content("#attention-status") and '"}"' in page.text_content("#attention-status")
        visit(page, url + page_name(7))
        page.wait_for_selector("body[data-ready=yes]")
        page.fill("#letters-prompt", "ROMEO")
        page.locator("#letters-topk").fill("3")
        assert page.locator("#letters-bars .bar.cut").count() == 17             # 20 shown, 3 kept
        visit(page, url + page_name(8))
        page.wait_for_selector("body[data-ready=yes]")
        page.locator("#learning-step").fill("0")
        assert page.text_content("#learning-sample").startswith("step 0:")
        assert_no_problems(problems(page))


def numpy_sample(checkpoint, prompt, seed, temperature, length, top_k=None, top_p=1.0):
    flags = ["--dtype", "float64", "--prompt", prompt, "--seed", str(seed), "--temperature", str(temperature),
             "--max-new-tokens", str(length), "--top-p", str(top_p)] + (["--top-k", str(top_k)] if top_k else [])
    result = run("-m", "numpy_gpt.sample", "--checkpoint", str(checkpoint), *flags)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    return result.stdout[:-1]


def numpy_last_step(checkpoint, prompt, seed, length, **rule):
    """-> (the model's probabilities (softmax of the logits, no rule applied) at the step that drew the
    last of length characters: what the playground's raw bars show when it is done; how many windows
    numpy_gpt primed with a prefill on the way; those logits)."""
    params, config, chars, _ = load_weights(checkpoint)
    params = {name: p.astype(np.float64) for name, p in params.items()}
    kv = new_kv_cache(params, config, 1)
    prefills = []
    def prefill(ids):
        prefills.append(len(ids))
        return gpt_prefill(params, config, np.array([ids]), kv)[0]
    steps = generate(prefill, lambda token, pos: gpt_decode(params, config, np.array([token]), pos, kv)[0],
                     [chars.index(c) for c in prompt], length, config.block_size, np.random.default_rng(seed), **rule)
    *_, (_, logits) = steps
    probs = np.exp(logits - logits.max())
    return probs / probs.sum(), len(prefills), logits


GRID = 20_000


def drawn_shares(logits, temperature, top_k, top_p):
    """(V,) the probability with which numpy_gpt.sampling.pick draws each token, measured by pick itself
    on GRID evenly spaced uniform numbers: each share is within 1 / GRID of the exact one."""
    counts = np.zeros(len(logits))
    for u in (np.arange(GRID) + 0.5) / GRID:
        counts[pick(logits, u, temperature, top_k, top_p)] += 1
    return counts / GRID


@pytest.mark.parametrize("prompt, seed, temperature, top_k, top_p", [
    ("ROMEO:", 7, 0.8, None, 1.0),
    ("KING:\nWhat", 1337, 1.0, 10, 0.9),
])
def test_the_playground_writes_what_numpy_gpt_sample_writes(browser, site, prompt, seed, temperature, top_k, top_p):
    length = 300                                                               # past block_size 32: the window slides
    expected = numpy_sample(site["checkpoint"], prompt, seed, temperature, length, top_k, top_p)
    with served(site["dir"]) as url, browser_page(browser, url) as page:
        visit(page, url + page_name(10))
        page.wait_for_selector("body[data-ready=yes]")
        page.fill("#play-prompt", prompt)                                      # as a user types them
        page.fill("#play-seed", str(seed))
        page.fill("#play-temperature", str(temperature))
        page.fill("#play-topk", str(top_k) if top_k else "")
        page.fill("#play-topp", str(top_p))
        page.fill("#play-length", str(length))
        page.click("#play-generate")
        page.wait_for_selector("#play-output[data-done=yes]", timeout=60_000)
        assert page.text_content("#play-output") == expected
        assert page.locator("#play-attention .strip:not(.strip-chars)").count() == 4
        probs, windows, logits = numpy_last_step(site["checkpoint"], prompt, seed, length, temperature=temperature,
                                                 top_k=top_k, top_p=top_p)
        # the bars: what the draw used, numpy_gpt's rule measured by its own pick(); then the raw softmax
        used = drawn_shares(logits, temperature, top_k, top_p)
        assert "What the draw used" in page.text_content("#play-bars-note")
        shown = [float(v) for v in page.locator("#play-bars .bar .value").all_text_contents()]
        expected_bars = np.sort(used[used > 0])[::-1][:10]
        assert len(shown) == len(expected_bars)
        assert np.abs(np.array(shown) - expected_bars).max() <= 0.0005 + 2 / GRID   # shown to 3 places
        page.check("#play-raw")
        assert "raw probabilities" in page.text_content("#play-bars-note")
        shown = [float(v) for v in page.locator("#play-bars .bar .value").all_text_contents()]
        assert np.abs(np.array(shown) - np.sort(probs)[::-1][:10]).max() <= 0.0005 + 1e-9
        # the characters over the strips are the last ones the kid saw before its last draw
        seen = (prompt + expected[len(prompt):-1])[-24:]
        assert "".join(page.locator("#play-attention .strip-chars .chars span").all_text_contents()) == \
            "".join({"\n": "⏎", " ": "␣"}.get(c, c) for c in seen)
        # the command shown, run by bash, prints the same text
        command = page.text_content("#play-command") + f" --checkpoint {site['checkpoint']}"
        result = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected + "\n"
        # every window after the prompt's was primed with the worker's help (peek/web/ahead.js), and the
        # text above is still numpy_gpt's
        assert windows > 2 and page.get_attribute("#play-output", "data-windows") == f"{windows - 1} of {windows}"
        assert "python -m numpy_gpt.sample --dtype float64 --prompt" in page.text_content("#play-command")
        assert_no_problems(problems(page))


def test_the_playground_names_unknown_characters(browser, site):
    with served(site["dir"]) as url, browser_page(browser, url) as page:
        visit(page, url + page_name(10))
        page.wait_for_selector("body[data-ready=yes]")
        page.fill("#play-prompt", "ROMEO€")
        page.click("#play-generate")
        assert "1 character(s) not in the kid's vocabulary: \"€\"" in page.text_content("#play-status")
        assert page.text_content("#play-output") == ""
        assert_no_problems(problems(page))


def test_another_vocabulary_and_shape(browser, tmp_path):
    """A kid with 12 characters, 3 layers of 3 heads: the site adapts."""
    chars = "\n .:abcdeklm"
    config = GPTConfig(vocab_size=len(chars), block_size=20, n_layer=3, n_head=3, n_embd=18)
    save_weights(tmp_path / "kid.npz", init_params(config, seed=4), config, chars)
    result = run("-m", "peek", "build", "--checkpoint", str(tmp_path / "kid.npz"), "--out", str(tmp_path / "site"))
    assert result.returncode == 0, result.stderr
    with served(tmp_path / "site") as url, browser_page(browser, url) as page:
        for name in PAGES:
            assert_no_problems(visit(page, url + name))
            if name != "index.html":
                page.wait_for_selector("body[data-ready=yes]")
            assert page.locator("#error").is_hidden(), (name, page.locator("#error").text_content())
        visit(page, url + page_name(5))
        page.wait_for_selector("body[data-ready=yes]")
        assert page.locator("#attention-grid canvas").count() == 9


@pytest.mark.parametrize("damage, message", [
    (lambda e: (e / "weights.bin").write_bytes((e / "weights.bin").read_bytes()[:-4]), "truncated"),
    (lambda e: (e / "peek.json").unlink(), "no export at"),
])
def test_build_refuses_a_broken_export(tmp_path, damage, message):
    chars = "abc"
    config = GPTConfig(vocab_size=3, block_size=4, n_layer=1, n_head=1, n_embd=4)
    save_weights(tmp_path / "kid.npz", init_params(config, seed=1), config, chars)
    assert run("-m", "peek", "export", "--checkpoint", str(tmp_path / "kid.npz"), "--prompt", "ab",
               "--out", str(tmp_path / "e")).returncode == 0
    damage(tmp_path / "e")
    assert_user_error(run("-m", "peek", "build", "--export", str(tmp_path / "e"), "--out", str(tmp_path / "site")),
                      message)
    assert not (tmp_path / "site").exists()                  # not even the folder is left behind


def test_a_build_that_cannot_finish_leaves_the_old_site_as_it_was(tmp_path):
    """A rebuild from another kid into a site where a folder stands in a page's place: one line naming
    it, and not one of the old site's files changed, nor a temporary one left."""
    site = tmp_path / "site"
    for n, chars in enumerate(("abc", "abcdef")):
        config = GPTConfig(vocab_size=len(chars), block_size=4, n_layer=1, n_head=1, n_embd=4)
        save_weights(tmp_path / f"kid{n}.npz", init_params(config, seed=n), config, chars)
    assert run("-m", "peek", "build", "--checkpoint", str(tmp_path / "kid0.npz"), "--prompt", "ab",
               "--out", str(site)).returncode == 0
    (site / page_name(10)).unlink()
    (site / page_name(10)).mkdir()
    before = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    assert_user_error(run("-m", "peek", "build", "--checkpoint", str(tmp_path / "kid1.npz"), "--prompt", "ab",
                          "--out", str(site)), f"{page_name(10)} is a folder in the way")
    assert {p: p.read_bytes() for p in site.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in site.iterdir() if p.name.startswith(".")) == []
    (site / page_name(10)).rmdir()
    assert run("-m", "peek", "build", "--checkpoint", str(tmp_path / "kid1.npz"), "--prompt", "ab",
               "--out", str(site)).returncode == 0
    assert json.loads((site / "data" / "weights.json").read_text())["vocab"] == "abcdef"


def test_the_playground_stops(browser, site):
    with served(site["dir"]) as url, browser_page(browser, url) as page:
        visit(page, url + page_name(10))
        page.wait_for_selector("body[data-ready=yes]")
        page.fill("#play-length", "10000")
        page.click("#play-generate")
        page.wait_for_function("document.getElementById('play-output').textContent.length > 60")
        page.click("#play-stop")
        page.wait_for_selector("#play-output[data-done=stopped]", timeout=30_000)
        written = len(page.text_content("#play-output"))
        assert 60 < written < 10000 + 6 and "stopped" in page.text_content("#play-status")
        assert page.is_enabled("#play-generate") and not page.is_enabled("#play-stop")
        assert_no_problems(problems(page))


def test_the_site_benchmark_runs(site):
    """python -m benchmarks.site in chromium, on the small kid: its table, every figure measured."""
    chromium_or_skip()
    result = run("-m", "benchmarks.site", "--checkpoint", str(site["checkpoint"]), "--repeats", "1", "--length", "40")
    assert result.returncode == 0, result.stderr
    rows = dict((cell.strip() for cell in line.strip("|").split(" | ")) for line in result.stdout.splitlines()
                if line.startswith("| ") and not line.startswith("| measure"))
    number = r"([0-9][0-9,.]*)"
    for length, what in ((40, "ROMEO: and on"), (26, "in one window, no slide")):    # block_size 32 - len("ROMEO:")
        assert re.fullmatch(number + r" characters/s \(min .*\)",
                            rows[f"playground generation, KV cache, {length} characters ({what}; median of 1)"])
        assert re.fullmatch(number + " characters/s on one core; " + number + " with the worker's share off the tab",
                            rows[f"the playground for {length} characters, were all its multiply-adds that fast "
                                 "and nothing else took time"])
    _, windows, _ = numpy_last_step(site["checkpoint"], "ROMEO:", 0, 40, temperature=0.8)    # slides past 32
    assert re.fullmatch(f"{windows - 1} of {windows} in the runs; the worker's share, in parallel: {number} G multiply-adds",
                        rows["windows primed with the worker's help (peek/web/ahead.js), for 40 characters"])
    linear = re.fullmatch(number + " G multiply-adds/s with 24 rows \\(a prefill\\), " + number + " with 1 \\(a decode\\)",
                          rows["kid.js's Linear alone, in the same tab, on one layer's weights"])
    assert linear and all(float(g) > 0 for g in linear.groups())


def generate_ok(page, length=20):
    """A valid run on the playground: its text on screen, its command shown."""
    page.fill("#play-prompt", "ROMEO:")
    page.fill("#play-seed", "1337")
    page.fill("#play-topk", "")
    page.fill("#play-length", str(length))
    page.click("#play-generate")
    page.wait_for_selector("#play-output[data-done=yes]")
    assert page.text_content("#play-output").startswith("ROMEO:") and page.is_visible("#play-command")


REFUSED = [
    ("seed", "4294967296", "The seed must be a whole number from 0 to 4,294,967,295"),
    ("seed", "-1", "The seed must be a whole number from 0 to 4,294,967,295"),
    ("seed", "1.5", "The seed must be a whole number"),
    ("seed", "", "The seed must be a whole number"),
    ("length", "100000", "The length must be a whole number from 0 to 10,000"),
    ("length", "-1", "The length must be a whole number from 0 to 10,000"),
    ("topk", "0", "Top-k must be a whole number from 1 to"),
    ("topk", "999", "Top-k must be a whole number from 1 to"),
    ("prompt", "ROMEO€", "The prompt has 1 character(s) not in the kid's vocabulary: \"€\""),
]


def test_the_playground_refuses_what_the_cli_refuses(browser, site):
    """Each refused setting, after a valid run: one line saying what is wrong; the old text, its bars and
    its command gone, so that nothing on screen belongs to another setting; generate writes nothing. The
    ranges are the CLI's (numpy_gpt/machinery/cli.py: the seed 0..4294967295, top-k 1..vocab size), the length the
    field's 0..10000."""
    with served(site["dir"]) as url, browser_page(browser, url) as page:
        visit(page, url + page_name(10))
        page.wait_for_selector("body[data-ready=yes]")
        for field, value, message in REFUSED:
            generate_ok(page)
            page.fill(f"#play-{field}", value)
            case = f"{field} {value!r}"
            assert message in page.text_content("#play-status"), case
            assert page.text_content("#play-output") == "", case
            assert page.get_attribute("#play-output", "data-done") is None, case
            assert page.text_content("#play-command") == "" and not page.is_visible("#play-command"), case
            assert page.is_hidden("#play-live"), case
            page.click("#play-generate")
            assert message in page.text_content("#play-status") and page.text_content("#play-output") == "", case
        assert_no_problems(problems(page))


def test_the_playground_takes_the_cli_edges(browser, site):
    """The largest seed and a length of 0 are what the CLI takes: the page writes, and shows the command,
    which the CLI runs to the same text."""
    with served(site["dir"]) as url, browser_page(browser, url) as page:
        visit(page, url + page_name(10))
        page.wait_for_selector("body[data-ready=yes]")
        for seed, length in (("4294967295", "30"), ("0", "0")):
            page.fill("#play-seed", seed)
            page.fill("#play-length", length)
            page.click("#play-generate")
            page.wait_for_selector("#play-output[data-done=yes]")
            command = page.text_content("#play-command")
            assert f"--seed {seed} " in command and command.endswith(f"--max-new-tokens {length}")
            result = subprocess.run(["bash", "-c", command + f" --checkpoint {site['checkpoint']}"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr
            assert result.stdout == page.text_content("#play-output") + "\n"
        assert page.text_content("#play-output") == page.input_value("#play-prompt")    # length 0: the prompt
        assert_no_problems(problems(page))


def test_attention_labels_every_head_with_its_measured_habit(browser, site):
    """Step 5: each map carries its head's habit from the export (peek.habits), and the large map reads
    its weights on hover, as the kid computes them."""
    data = json.loads((site["dir"] / "data" / "peek.json").read_text())
    habits = [h for layer in data["habits"] for h in layer]
    assert len(habits) == 4
    with served(site["dir"]) as url, browser_page(browser, url) as page:
        visit(page, url + page_name(5))
        page.wait_for_selector("body[data-ready=yes]")
        def describe(h):                                                    # peek.habits.describe
            return (f"{h['label']}, {h['mean_distance']:.1f} characters back on average" if h["habit"] == "spread"
                    else f"{h['label']}, {100 * h['figure']:.0f}% of its weight")
        heads = page.locator("#attention-grid .head")
        assert [heads.nth(i).get_attribute("aria-label") for i in range(4)] == \
            [f"layer {h['layer']}, head {h['head']}: {describe(h)}" for h in habits]
        for i, h in enumerate(habits):                                      # the caption: its figure
            figure = f"{h['mean_distance']:.1f} back" if h["habit"] == "spread" else f"{100 * h['figure']:.0f}%"
            assert heads.nth(i).locator(".habit").text_content().endswith(figure)
        heads.nth(3).click()                                                # layer 1, head 1
        assert page.text_content("#attention-focus h2") == f"Layer 1, head 1: {describe(habits[3])}"
        page.fill("#attention-prompt", "ROMEO:")
        box = page.locator("#attention-focus svg.attmap g").bounding_box()
        page.mouse.move(box["x"] + box["width"] * (0.5 / 6), box["y"] + box["height"] * (5.5 / 6))   # row 5, column 0
        readout = page.text_content("#attention-focus .readout")
        weight = float(re.search(r"with weight ([0-9.]+)", readout).group(1))
        params, config, chars, _ = load_weights(site["checkpoint"])
        from peek.analysis import prompt_view
        att = prompt_view({k: v.astype(np.float64) for k, v in params.items()}, config, chars, "ROMEO:", gradients=False)["attention"]
        assert readout.startswith('Position 5 (":") looks at position 0 ("R")')
        assert abs(weight - att[1][1][5][0]) <= 0.0005 + 1e-9
        assert "python -m numpy_gpt.exercise start attention" in page.inner_text("main")


def test_letters_opens_where_the_kid_is_unsure(browser, site):
    """Step 7's default prompt is the held-out passage's prefix (12 to 48 characters) after which the
    kid's next-character entropy is highest, and there the sliders visibly move the bars."""
    data = json.loads((site["dir"] / "data" / "peek.json").read_text())
    probs = np.array(data["passage"]["probs"])
    entropy = -(probs * np.log(probs)).sum(axis=1)
    t = 11 + int(np.argmax(entropy[11:48]))
    with served(site["dir"]) as url, browser_page(browser, url) as page:
        visit(page, url + page_name(7))
        page.wait_for_selector("body[data-ready=yes]")
        assert page.input_value("#letters-prompt") == data["passage"]["text"][:t + 1]
        top = lambda: float(page.locator("#letters-bars .bar .value").first.text_content())
        at_1 = top()
        assert abs(at_1 - probs[t].max()) <= 0.0005 + 1e-9 and at_1 < 0.8      # the choice is open
        page.locator("#letters-temperature").fill("0.3")
        assert top() > at_1 + 0.1                                           # sharper
        page.locator("#letters-temperature").fill("2")
        assert top() < at_1                                                 # flatter
        page.locator("#letters-topp").fill("0.5")
        assert page.locator("#letters-bars .bar.cut").count() > 0


def test_the_calculator_counts_what_numpy_gpt_builds(browser, site):
    """Step 9: the total the calculator shows for the kid and for nanoGPT's shakespeare_char model is the
    number of parameters numpy_gpt.model.param_shapes gives them."""
    with served(site["dir"]) as url, browser_page(browser, url) as page:
        visit(page, url + page_name(9))
        page.wait_for_selector("body[data-ready=yes]")
        total = lambda: int(page.text_content("#calc-out .calc-total b").replace(",", ""))
        config = GPTConfig(**json.loads((site["dir"] / "data" / "peek.json").read_text())["config"])
        assert total() == sum(int(np.prod(s)) for s in param_shapes(config).values())
        assert "This is the kid." in page.text_content("#calc-out")
        page.click("[data-preset=nanogpt]")
        nano = GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384)
        assert total() == sum(int(np.prod(s)) for s in param_shapes(nano).values())
        assert "nanoGPT" in page.text_content("#calc-out") and "about" in page.text_content("#calc-out")
        page.locator("#calc-heads").fill("5")                               # 384 does not split into 5
        assert "must split evenly" in page.text_content("#calc-out")
        assert_no_problems(problems(page))


def snapshot_site(tmp_path, corpus, keep):
    """A site of the test kid whose run kept only the snapshots at the steps in keep."""
    checkpoint, text = trained_kid(tmp_path, corpus)
    for snap in (checkpoint.parent / "checkpoints").iterdir():
        if int(snap.stem.split("_")[1]) not in keep:
            snap.unlink()
    result = run("-m", "peek", "build", "--checkpoint", str(checkpoint), "--data", str(text), "--out", str(tmp_path / "site"))
    assert result.returncode == 0, result.stderr
    return tmp_path / "site"


def test_watch_it_learn_moves_the_insides_with_the_step(browser, site):
    """Step 8 with a run of four snapshots: the step slider moves the loss marker, the sample, the map,
    the attention and the habits together, each from its snapshot."""
    data = json.loads((site["dir"] / "data" / "peek.json").read_text())
    snaps = data["snapshots"]["snapshots"]
    assert [s["step"] for s in snaps] == [0, 50, 100, 150]
    with served(site["dir"]) as url, browser_page(browser, url) as page:
        visit(page, url + page_name(8))
        page.wait_for_selector("body[data-ready=yes]")
        seen = []
        for i, snap in enumerate(snaps):
            page.locator("#learning-step").fill(str(i))
            head = page.text_content("#snapshot-view > h2")
            assert head.startswith(f"Inside the kid at step {snap['step']}") and f"snapshot {i + 1} of 4" in head
            assert page.text_content("#learning-sample").startswith(f"step {snap['step']}:")
            assert page.locator("#snapshot-view .snap-att canvas").count() == 2
            habits = snap["habits"][data["snapshots"]["layer"]]
            assert page.locator("#snapshot-view .snap-habits li").all_text_contents()[0].startswith(
                f"head 0: {habits[0]['label']}")
            seen.append(page.locator("#snapshot-view svg.map text.char").first.get_attribute("x"))
            page.locator("#snapshot-view .snap-att .head").nth(1).click()        # head 1, large, with its habit
            assert page.text_content("#snapshot-view figure h2").startswith(f"Layer {data['snapshots']['layer']}, head 1 "
                                                                             f"at step {snap['step']:,}")
            assert page.locator("#snapshot-view svg.attmap text").count() > 0
        assert len(set(seen)) > 1                                            # the letters move
        assert_no_problems(problems(page))


def test_watch_it_learn_with_a_single_snapshot(browser, tmp_path, corpus):
    site = snapshot_site(tmp_path, corpus, keep={150})
    with served(site) as url, browser_page(browser, url, width=PHONE) as page:
        visit(page, url + page_name(8))
        page.wait_for_selector("body[data-ready=yes]")
        for i in (0, 3):
            page.locator("#learning-step").fill(str(i))
            assert page.text_content("#snapshot-view > h2").startswith("Inside the kid at step 150")
            assert "the only snapshot of this run" in page.text_content("#snapshot-view > h2")
            assert page.locator("#snapshot-view svg.map text.char").count() > 0
        assert_legible(page, "step 8, one snapshot")
        assert_no_problems(problems(page))


def test_the_surprises_read_docs_experiments_table(tmp_path):
    """Step 9's surprises from docs/experiments.md take their figures from its table, and without the
    page or its rows there are none (no figure is made up)."""
    from peek.build import experiment_surprises
    page = tmp_path / "experiments.md"
    page.write_text("| flag (NAME) | val loss at step 1,000 | 3,000 | 5,000 | train loss at 5,000 |\n|---|---:|---:|---:|---:|\n"
                    "| none: dropout 0.1 (`defaults`) | 1.75 | 1.55 | 1.5031 | 1.2286 |\n"
                    "| `--dropout 0` (`d0.0`) | 1.72 | 1.5264 | 1.5249 | 1.1253 |\n"
                    "| `--seed 1` (`seed1`) | 1.76 | 1.54 | 1.4873 | 1.2063 |\n")
    dropout, seed = experiment_surprises(page)
    assert "(1.5264, and 1.5249 at step 5,000)" in dropout and "down to 1.1253" in dropout and "ends at 1.5031" in dropout
    assert "between 1.4873 and 1.5031" in seed and "smaller than 0.016" in seed
    page.write_text("# Experiments\n\nNo table yet.\n")
    assert experiment_surprises(page) == [] and experiment_surprises(tmp_path / "missing.md") == []


def test_build_without_jinja2_says_how_to_get_it(monkeypatch):
    """peek build's templates need Jinja2: without it, one line that names the package and the install."""
    from numpy_gpt.machinery.errors import UserError
    from peek.build import environment
    monkeypatch.setitem(__import__("sys").modules, "jinja2", None)          # import jinja2 now fails
    with pytest.raises(UserError, match=r"peek build needs Jinja2.*pip install"):
        environment()
