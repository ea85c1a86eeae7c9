"""python -m peek build, and the site in a real browser: every page loads clean, nothing leaves the
machine, the live steps respond, and the playground writes what numpy_gpt.sample writes.

Screenshots of every page, at desktop and phone widths, go to out/screenshots/ for a person to look at.
"""
import json
import re

import numpy as np
import pytest

from numpy_gpt.machinery.checkpoint import load_weights, save_weights
from numpy_gpt.config import GPTConfig
from numpy_gpt.model import gpt_decode, gpt_prefill, init_params, new_kv_cache
from numpy_gpt.sampling import generate
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
    assert {"kid.js", "rng.js", "site.js", "style.css", "data/peek.json", "data/weights.bin", "data/parity.json"} <= set(files)
    absolute = re.compile(r"""(?:src|href)\s*=\s*["']?(?:[a-z]+:)?/|(?:from|import|fetch\()[ \t]*["'](?:[a-z]+:)?/|url\(["']?(?:[a-z]+:)?//""")
    for name in files:
        if name.endswith((".html", ".js", ".css")):
            text = (site["dir"] / name).read_text()
            assert not absolute.findall(text), (name, absolute.findall(text))       # relative URLs only
    block = (site["dir"] / page_name(6)).read_text()
    for function in ("def layernorm_forward", "def layernorm_backward", "def attention_backward", "def gpt_backward"):
        assert function in block                                              # numpy_gpt's own source
    import inspect
    from numpy_gpt import layers
    import html
    assert html.escape(inspect.getsource(layers.layernorm_backward)) in block


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
                    screenshot(page, SHOTS / f"{name[:-5]}-{tag}.png", width)
                    assert_no_problems(problems(page))


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
    last of length characters: what the playground's bars show when it is done; how many windows
    numpy_gpt primed with a prefill on the way)."""
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
    return probs / probs.sum(), len(prefills)


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
        assert page.locator("#play-bars .bar").count() == 10
        assert page.locator("#play-attention .strip").count() == 4
        shown = [float(v) for v in page.locator("#play-bars .bar .value").all_text_contents()]
        probs, windows = numpy_last_step(site["checkpoint"], prompt, seed, length, temperature=temperature,
                                         top_k=top_k, top_p=top_p)
        assert np.abs(np.array(shown) - np.sort(probs)[::-1][:10]).max() <= 0.0005 + 1e-9   # shown to 3 places
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
    _, windows = numpy_last_step(site["checkpoint"], "ROMEO:", 0, 40, temperature=0.8)    # slides past 32
    assert re.fullmatch(f"{windows - 1} of {windows} in the runs; the worker's share, in parallel: {number} G multiply-adds",
                        rows["windows primed with the worker's help (peek/web/ahead.js), for 40 characters"])
    linear = re.fullmatch(number + " G multiply-adds/s with 24 rows \\(a prefill\\), " + number + " with 1 \\(a decode\\)",
                          rows["kid.js's Linear alone, in the same tab, on one layer's weights"])
    assert linear and all(float(g) > 0 for g in linear.groups())
