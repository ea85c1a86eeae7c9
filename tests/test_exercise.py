"""python -m numpy_gpt.exercise: the skeletons it writes, and a grader proved to catch mistakes.

Each planted mistake is a correct attention, written independently of numpy_gpt's, with one line changed;
it must fail at the check that names it, with the hint that names it. numpy_gpt's own attention and the
independent one pass every check, the payoff included (on a small model for a few steps: the kid's
200 steps are measured in docs/exercise.md).
"""
import os
import subprocess
import sys

import pytest

from numpy_gpt.machinery.errors import UserError
from numpy_gpt.exercise.__main__ import main

from conftest import ROOT, corpus_path

# A correct attention in NumPy, written apart from numpy_gpt.layers (np.split, np.where, einsum), so it
# rounds differently: the planted mistakes below each change one of its lines.
SOLUTION = '''
import math

import numpy as np


def attention_forward(qkv, n_head):
    B, T, C3 = qkv.shape
    C = C3 // 3
    D = C // n_head
    q, k, v = (a.reshape(B, T, n_head, D).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=-1))
    scale = 1 / math.sqrt(D)
    scores = np.einsum("bhid,bhjd->bhij", q, k) * scale
    visible = np.tril(np.ones((T, T), dtype=bool))
    scores = np.where(visible, scores, -np.inf)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    att = e / e.sum(axis=-1, keepdims=True)
    y = att @ v
    return y.transpose(0, 2, 1, 3).reshape(B, T, C), (q, k, v, att, scale)


def attention_backward(dy, cache):
    q, k, v, att, scale = cache
    B, H, T, D = q.shape
    g = dy.reshape(B, T, H, D).transpose(0, 2, 1, 3)
    datt = g @ v.transpose(0, 1, 3, 2)
    dv = att.transpose(0, 1, 3, 2) @ g
    dscores = att * (datt - (att * datt).sum(axis=-1, keepdims=True))
    dq = dscores @ k * scale
    dk = dscores.transpose(0, 1, 3, 2) @ q * scale
    merge = lambda a: a.transpose(0, 2, 1, 3).reshape(B, T, H * D)
    return np.concatenate([merge(dq), merge(dk), merge(dv)], axis=-1)
'''

FORWARD_ONLY = SOLUTION.split("\n\ndef attention_backward")[0] + "\n"

# name -> (the line as written, the line with the mistake, the file it goes in, the check's verdict line that
# must fail, words of the hint)
MISTAKES = {
    "missing mask": ("    scores = np.where(visible, scores, -np.inf)\n", "", FORWARD_ONLY,
                     "no attention to the future", "the causal mask is missing"),
    "mask after the softmax": ("    scores = np.where(visible, scores, -np.inf)\n"
                               "    e = np.exp(scores - scores.max(axis=-1, keepdims=True))\n"
                               "    att = e / e.sum(axis=-1, keepdims=True)\n",
                               "    e = np.exp(scores - scores.max(axis=-1, keepdims=True))\n"
                               "    att = e / e.sum(axis=-1, keepdims=True) * visible\n",
                               FORWARD_ONLY, "no attention to the future",
                               "mask the scores with -inf before the softmax"),
    "missing scale": ("    scale = 1 / math.sqrt(D)\n", "    scale = 1\n", FORWARD_ONLY,
                      "scores scaled by 1/sqrt(D)", "the scores are not scaled"),
    "scaled by 1/D": ("    scale = 1 / math.sqrt(D)\n", "    scale = 1 / D\n", FORWARD_ONLY,
                      "scores scaled by 1/sqrt(D)", "divided by D; divide by sqrt(D)"),
    "softmax over the wrong axis": (
        "    att = e / e.sum(axis=-1, keepdims=True)\n",
        "    e = np.exp(scores - scores.max(axis=-2, keepdims=True))\n    att = e / e.sum(axis=-2, keepdims=True)\n",
        FORWARD_ONLY, "no attention to the future", "normalises over the queries"),
    "rows not normalised": ("    att = e / e.sum(axis=-1, keepdims=True)\n", "    att = e\n", FORWARD_ONLY,
                            "each row of weights sums to 1", "the rows of weights do not sum to 1"),
    "heads mixed": ("    q, k, v = (a.reshape(B, T, n_head, D).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, "
                    "axis=-1))\n",
                    "    q, k, v = (a.reshape(B, n_head, T, D) for a in np.split(qkv, 3, axis=-1))\n", FORWARD_ONLY,
                    "heads kept apart", "the heads are mixed"),
    "k @ q^T": ('    scores = np.einsum("bhid,bhjd->bhij", q, k) * scale\n',
                '    scores = np.einsum("bhid,bhjd->bhij", k, q) * scale\n', FORWARD_ONLY,
                "scores scaled by 1/sqrt(D)", "not k @ q^T"),
    "transposed gradient": ("    dk = dscores.transpose(0, 1, 3, 2) @ q * scale\n", "    dk = dscores @ q * scale\n",
                            SOLUTION, "dk", "dk is wrong: it looks transposed"),
    "dv transposed": ("    dv = att.transpose(0, 1, 3, 2) @ g\n", "    dv = att @ g\n", SOLUTION,
                      "3. backward: dv", "dv is wrong: it looks transposed"),
    "missing softmax term": ("    dscores = att * (datt - (att * datt).sum(axis=-1, keepdims=True))\n",
                             "    dscores = att * datt\n", SOLUTION, "dq",
                             "ignores the softmax's normalising sum"),
    "gradient off by a constant factor": ("    dq = dscores @ k * scale\n", "    dq = dscores @ k\n", SOLUTION, "dq",
                                          "dq is off by a factor of sqrt(D): the scale 1/sqrt(D) is missing"),
    "gradient off by 2": ("    dk = dscores.transpose(0, 1, 3, 2) @ q * scale\n",
                          "    dk = 2 * dscores.transpose(0, 1, 3, 2) @ q * scale\n", SOLUTION, "dk",
                          "dk is off by a factor of 2"),
    "dq and dk swapped": ("    return np.concatenate([merge(dq), merge(dk), merge(dv)], axis=-1)\n",
                          "    return np.concatenate([merge(dk), merge(dq), merge(dv)], axis=-1)\n", SOLUTION, "dq",
                          "dq and dk are swapped"),
    "dy changed in place": ("    g = dy.reshape(B, T, H, D).transpose(0, 2, 1, 3)\n",
                            "    dy *= 1.0\n    dy += 1.0\n    g = dy.reshape(B, T, H, D).transpose(0, 2, 1, 3)\n",
                            SOLUTION, "1. runs, shapes right", "attention_backward changed its input dy in place"),
    "heads not merged": ("    return y.transpose(0, 2, 1, 3).reshape(B, T, C), (q, k, v, att, scale)\n",
                         "    return y, (q, k, v, att, scale)\n", FORWARD_ONLY, "1. runs, shapes right",
                         "the heads are not merged back"),
    "diagonal masked": ("    visible = np.tril(np.ones((T, T), dtype=bool))\n",
                        "    visible = np.tril(np.ones((T, T), dtype=bool), k=-1)\n", FORWARD_ONLY,
                        "1. runs, shapes right", "its own position included"),
}


def grade(tmp_path, source, *flags, name="mine.py"):
    """Grade source as a learner's file -> (exit status, the lines printed)."""
    path = tmp_path / name
    path.write_text(source)
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["check", str(path), *flags])
    return status, out.getvalue().splitlines()


def failing_label(lines):
    """The verdict line that failed: the last FAIL. Check 2 fails on its first line (y differs) and then on the
    property that names the mistake; every other check fails on one line."""
    fails = [line for line in lines if " FAIL" in line]
    assert len(fails) == 1 or (len(fails) == 2 and fails[0].startswith("2. forward = numpy_gpt's")), lines
    return fails[-1]


@pytest.mark.parametrize("name", list(MISTAKES))
def test_planted_mistake_fails_at_its_check_with_its_hint(tmp_path, name):
    right, wrong, base, check, hint = MISTAKES[name]
    assert base.count(right) == 1
    status, lines = grade(tmp_path, base.replace(right, wrong), "--no-payoff")
    assert status == 1, lines
    assert failing_label(lines).strip().startswith(check), lines
    assert lines[-1].startswith("hint: ") and hint in lines[-1], lines
    assert "every check passes" not in "\n".join(lines)


def test_an_independent_solution_passes_every_check(tmp_path):
    status, lines = grade(tmp_path, SOLUTION, "--small", "--steps", "3", "--data", str(corpus_path()))
    assert status == 0, lines
    assert lines[-1].startswith("every check passes"), lines
    for label in ("1. runs, shapes right", "2. forward = numpy_gpt's", "heads kept apart", "no attention to the future",
                  "each row of weights sums to 1", "scores scaled by 1/sqrt(D)", "3. backward: dv", "dq", "dk",
                  "losses = numpy_gpt's"):
        assert any(line.strip().startswith(label) and " ok " in line + " " for line in lines), (label, lines)


@pytest.mark.parametrize("source, level", [
    ("from numpy_gpt.layers import attention_forward\n", "level 1, the forward in NumPy"),
    ("from numpy_gpt.layers import attention_forward, attention_backward\n", "level 2, the backward in NumPy"),
    ("from torch_gpt.model import CausalSelfAttention\n", "level 1, the forward in PyTorch"),
])
def test_numpy_gpts_own_attention_passes_every_check(tmp_path, source, level):
    """numpy_gpt's (and torch_gpt's) attention is the solution: it passes, the payoff bit for bit in NumPy."""
    status, lines = grade(tmp_path, source, "--small", "--steps", "3", "--data", str(corpus_path()))
    assert status == 0, lines
    assert level in lines[0] and lines[1].startswith("note: mine.py takes ") and "ready-made" in lines[1]
    assert not any(" FAIL" in line for line in lines)
    payoff = next(line for line in lines if line.strip().startswith("losses = numpy_gpt's"))
    assert " ok " in payoff and ("bit for bit" in payoff or "torch" in source), payoff
    assert any("sample = numpy_gpt's" in line and " ok " in line for line in lines), lines


def test_the_payoff_catches_an_attention_right_only_at_the_graders_sizes(tmp_path):
    """A mask of the grader's size (6) passes checks 1 to 3 and fails on the model's context."""
    source = FORWARD_ONLY.replace("visible = np.tril(np.ones((T, T), dtype=bool))",
                                  "visible = np.tril(np.ones((6, 6), dtype=bool))")
    status, lines = grade(tmp_path, source, "--small", "--steps", "2", "--data", str(corpus_path()))
    assert status == 1
    assert failing_label(lines).strip().startswith("losses = numpy_gpt's"), lines
    assert "in the kid at step 1" in lines[-1] and "mine.py line" in lines[-1], lines


TORCH_SOLUTION = '''
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x):
        B, T, C = x.shape
        H = self.n_head
        q, k, v = (a.view(B, T, H, C // H).transpose(1, 2) for a in self.c_attn(x).split(C, dim=2))
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        att = F.softmax(scores, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)
'''


def test_pytorchs_one_call_attention_passes_with_a_note(tmp_path):
    source = TORCH_SOLUTION.replace("        y = (att @ v).transpose(1, 2).reshape(B, T, C)\n",
                                    "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)\n"
                                    "        y = y.transpose(1, 2).reshape(B, T, C)\n")
    status, lines = grade(tmp_path, source, "--no-payoff")
    assert status == 0 and lines[1].startswith("note: mine.py takes scaled_dot_product_attention ready-made"), lines


@pytest.mark.parametrize("right, wrong, check, hint", [
    (None, None, None, None),
    ('        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))\n', "",
     "no attention to the future", "the causal mask is missing"),
    ("        att = F.softmax(scores, dim=-1)\n", "        att = F.softmax(scores, dim=-1).detach()\n",
     "3. backward, autograd's", "computed outside autograd"),
])
def test_the_torch_level(tmp_path, right, wrong, check, hint):
    source = TORCH_SOLUTION if right is None else TORCH_SOLUTION.replace(right, wrong)
    status, lines = grade(tmp_path, source, "--no-payoff")
    if right is None:
        assert status == 0 and "3. backward, autograd's" in "\n".join(lines), lines
        return
    assert status == 1
    assert failing_label(lines).strip().startswith(check), lines
    assert hint in lines[-1], lines


# ------------------------------------------------------------------------------------------------
# start, and the skeletons as written


@pytest.mark.parametrize("level, file, defines", [
    ("attention", "my_attention.py", "def attention_forward("),
    ("attention-torch", "my_attention_torch.py", "class CausalSelfAttention("),
    ("attention-backward", "my_attention_backward.py", "def attention_backward("),
])
def test_start_writes_a_skeleton_that_check_turns_down_with_one_line(tmp_path, monkeypatch, level, file, defines):
    monkeypatch.chdir(tmp_path)
    assert main(["start", level]) == 0
    text = (tmp_path / file).read_text()
    assert defines in text and "TODO" in text
    status, lines = grade(tmp_path, text, name=file)
    assert status == 1
    assert failing_label(lines).strip().startswith("1. runs, shapes right"), lines
    assert lines[-1].startswith("hint: ") and "TODO" in lines[-1], lines


def test_the_backward_skeleton_holds_numpy_gpts_forward(tmp_path, monkeypatch):
    """Level 2's forward is numpy_gpt's, copied when start runs: with numpy_gpt's backward pasted in, it passes."""
    import inspect

    from numpy_gpt import layers
    monkeypatch.chdir(tmp_path)
    main(["start", "attention-backward"])
    text = (tmp_path / "my_attention_backward.py").read_text()
    assert inspect.getsource(layers.attention_forward) in text
    solved = text.split("def attention_backward(")[0] + "from numpy_gpt.layers import attention_backward\n"
    status, lines = grade(tmp_path, solved, "--no-payoff")
    assert status == 0, lines


def test_the_skeletons_ship_as_package_data():
    """pyproject.toml ships skeletons/*.py; start reads them through importlib.resources."""
    text = (ROOT / "pyproject.toml").read_text()
    assert '[tool.setuptools.package-data]\n"numpy_gpt.exercise" = ["skeletons/*.py"]' in text
    from numpy_gpt.exercise.__main__ import LEVELS
    for skeleton, _, _ in LEVELS.values():
        assert (ROOT / "numpy_gpt" / "exercise" / "skeletons" / skeleton).is_file()


# ------------------------------------------------------------------------------------------------
# the command line, as a learner runs it


def run(*args, cwd, env=None):
    env = dict(os.environ if env is None else env, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
    return subprocess.run([sys.executable, "-m", "numpy_gpt.exercise", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def assert_one_line_error(result, message, status=1):
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


@pytest.mark.parametrize("args", [["--help"], ["start", "--help"], ["check", "--help"]])
def test_help(tmp_path, args):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("usage: python -m numpy_gpt.exercise"), result.stderr


@pytest.mark.parametrize("setup, args, message, status", [
    (None, ["check", "nowhere.py"], "nowhere.py not found; write one with", 1),
    (("bad.py", "def attention_forward(qkv, n_head):\n    y = = 1\n"), ["check", "bad.py"],
     "bad.py line 2: invalid syntax", 1),
    (("other.py", "def forward(x):\n    return x\n"), ["check", "other.py"], "defines none of attention_forward", 1),
    (("folder", None), ["check", "folder"], "folder is a folder", 1),
    (None, ["start", "attn"], "invalid choice: 'attn'", 2),
    (None, [], "arguments are required: {start,check}", 2),
    (("my_attention.py", "# mine\n"), ["start", "attention"], "my_attention.py exists already", 1),
    (("mine.py", "from numpy_gpt.layers import attention_forward\n"), ["check", "mine.py", "--steps", "0"],
     "--steps must be at least 1", 1),
    (("mine.py", "from numpy_gpt.layers import attention_forward\n"), ["check", "mine.py", "--steps", "many"],
     "argument --steps: invalid int value: 'many'", 2),
    (("mine.py", "from numpy_gpt.layers import attention_forward\n"), ["check", "mine.py", "--data", "nowhere.txt"],
     "data file not found: nowhere.txt", 1),
    (("folder", None), ["start", "attention", "--out", "folder"], "folder is a folder; pass a file name", 1),
])
def test_bad_input_is_one_line(tmp_path, setup, args, message, status):
    if setup and setup[1] is None:
        (tmp_path / setup[0]).mkdir()
    elif setup:
        (tmp_path / setup[0]).write_text(setup[1])
    result = run(*args, cwd=tmp_path)
    assert_one_line_error(result, message, status)
    if args == ["start", "attention"]:
        assert (tmp_path / "my_attention.py").read_text() == "# mine\n"      # nothing lost
        assert run("start", "attention", "--force", cwd=tmp_path).returncode == 0
        assert "TODO" in (tmp_path / "my_attention.py").read_text()


def test_the_numpy_levels_run_where_torch_cannot_be_imported(tmp_path):
    """A `torch` that fails to import stands in for a machine with NumPy alone: start, check and the payoff of
    both NumPy levels work, and the PyTorch level says in one line what it needs."""
    fake = tmp_path / "no_torch"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch is not installed here')\n")
    env = {"PYTHONPATH": str(fake), "PATH": "/usr/bin:/bin"}
    for level in ("attention", "attention-backward"):
        assert run("start", level, cwd=tmp_path, env=env).returncode == 0
    (tmp_path / "solved.py").write_text(SOLUTION)
    result = run("check", "solved.py", "--small", "--steps", "2", "--data", str(corpus_path()), cwd=tmp_path, env=env)
    assert result.returncode == 0 and "every check passes" in result.stdout, result.stdout + result.stderr
    result = run("check", "my_attention.py", cwd=tmp_path, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert run("start", "attention-torch", cwd=tmp_path, env=env).returncode == 0
    result = run("check", "my_attention_torch.py", cwd=tmp_path, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "torch is not installed here" in result.stdout, result.stdout


def test_user_errors_are_user_errors(tmp_path):
    """In-process, the same bad inputs raise UserError, which run_cli prints as one line."""
    with pytest.raises(UserError, match="not found"):
        main(["check", str(tmp_path / "missing.py")])


def test_the_payoffs_kid_runs_the_learners_attention_and_the_names_come_back():
    """plugged_in points numpy_gpt.model's attention at the calling thread's pair for training and sampling,
    and restores numpy_gpt's names after."""
    import numpy as np

    from numpy_gpt import layers
    from numpy_gpt import model as numpy_model
    from numpy_gpt.config import GPTConfig
    from numpy_gpt.data import CharTokenizer
    from numpy_gpt.exercise.payoff import NumpyKid, plugged_in, sample
    from numpy_gpt.exercise.plumbing import kid_training_settings
    calls = {"forward": 0, "backward": 0}

    def forward(qkv, n_head):
        calls["forward"] += 1
        return layers.attention_forward(qkv, n_head)

    def backward(dy, cache):
        calls["backward"] += 1
        return layers.attention_backward(dy, cache)
    config = GPTConfig(vocab_size=5, block_size=8, n_layer=2, n_head=2, n_embd=8)
    settings = kid_training_settings()
    kid = NumpyKid(config, settings, (forward, backward))
    x = np.zeros((1, 8), dtype=np.int64)
    with plugged_in():
        kid.loss_and_grads(x, x, None)
        assert calls == {"forward": 2, "backward": 2}
        text = sample(kid, CharTokenizer("abcde"), "ab", config, settings)
    assert len(text) == 200 and calls["forward"] == 2 + 2 * 201    # 2 layers: the prompt, then after each character
    assert numpy_model.attention_forward is layers.attention_forward
    assert numpy_model.attention_backward is layers.attention_backward


# what a learner types into each skeleton's TODO lines: the line that assigns name, as the skeleton has it
FILLED = {
    "attention": {
        "q": "qkv[..., :C].reshape(B, T, H, D).transpose(0, 2, 1, 3)",
        "k": "qkv[..., C:2 * C].reshape(B, T, H, D).transpose(0, 2, 1, 3)",
        "v": "qkv[..., 2 * C:].reshape(B, T, H, D).transpose(0, 2, 1, 3)",
        "scores": "q @ k.transpose(0, 1, 3, 2) / math.sqrt(D)",
        "scores = scores": "np.where(np.triu(np.ones((T, T), bool), k=1), -np.inf, scores)",
        "att": "np.exp(scores - scores.max(axis=-1, keepdims=True)); att = att / att.sum(axis=-1, keepdims=True)",
        "y": "(att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)",
    },
    "attention-torch": {
        "q": "qkv.split(C, dim=2)[0].view(B, T, H, D).transpose(1, 2)",
        "k": "qkv.split(C, dim=2)[1].view(B, T, H, D).transpose(1, 2)",
        "v": "qkv.split(C, dim=2)[2].view(B, T, H, D).transpose(1, 2)",
        "scores": "q @ k.transpose(-2, -1) / math.sqrt(D)",
        "scores = scores": "scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float('-inf'))",
        "att": "F.softmax(scores, dim=-1)",
        "y": "(att @ v).transpose(1, 2).reshape(B, T, C)",
    },
    "attention-backward": {
        "datt": "dy @ v.transpose(0, 1, 3, 2)",
        "dv": "att.transpose(0, 1, 3, 2) @ dy",
        "dscores": "att * (datt - (att * datt).sum(axis=-1, keepdims=True))",
        "dq": "dscores @ k * scale",
        "dk": "dscores.transpose(0, 1, 3, 2) @ q * scale",
        "dqkv": "np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)",
    },
}


@pytest.mark.parametrize("level", list(FILLED))
def test_a_skeleton_with_its_todos_filled_in_passes(tmp_path, monkeypatch, level):
    """The skeletons and the grader fit together: each TODO line filled in, and nothing else changed, passes."""
    import re
    monkeypatch.chdir(tmp_path)
    main(["start", level, "--out", "skeleton.py"])
    text = (tmp_path / "skeleton.py").read_text()
    for target, code in FILLED[level].items():
        name, was = (target.split(" = ")[0], target.split(" = ")[1]) if " = " in target else (target, "None")
        pattern = rf"^(\s*){name} = {was} +# TODO.*$"
        assert len(re.findall(pattern, text, flags=re.M)) == 1, (target, level)
        text = re.sub(pattern, lambda m: f"{m.group(1)}{name} = {code}", text, flags=re.M)
    status, lines = grade(tmp_path, text, "--no-payoff")
    assert status == 0, lines
