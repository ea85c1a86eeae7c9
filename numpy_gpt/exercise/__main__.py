"""python -m numpy_gpt.exercise: write attention yourself, then have it graded.

    python -m numpy_gpt.exercise start attention            level 1, the forward, in NumPy -> my_attention.py
    python -m numpy_gpt.exercise start attention-torch      level 1, the forward, in PyTorch -> my_attention_torch.py
    python -m numpy_gpt.exercise start attention-backward   level 2, the backward, in NumPy -> my_attention_backward.py
    python -m numpy_gpt.exercise check my_attention.py      grade it: 1 shapes, 2 forward, 3 backward, 4 the payoff

The NumPy levels run with NumPy alone installed: nothing on their path imports torch.
"""
import ast
import importlib.util
import inspect
import sys
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

from .. import layers
from .grader import (CheckFailed, check_backward, check_forward, check_shapes, check_torch_backward, numpy_backward,
                     numpy_forward, say, torch_forward)
from .plumbing import ArgumentParser, HelpFormatter, UserError, atomic_write, check_output, open_input, run_cli

PROG = "python -m numpy_gpt.exercise"

# level name -> (skeleton in skeletons/, the file start writes, what the learner writes)
LEVELS = {
    "attention": ("attention.py", "my_attention.py", "level 1, the forward in NumPy: attention_forward"),
    "attention-torch": ("attention_torch.py", "my_attention_torch.py",
                        "level 1, the forward in PyTorch: CausalSelfAttention.forward"),
    "attention-backward": ("attention_backward.py", "my_attention_backward.py",
                           "level 2, the backward in NumPy: attention_backward"),
}
FORWARD_MARK = "# <numpy_gpt.layers.attention_forward>"


# ------------------------------------------------------------------------------------------------
# start


def skeleton_text(level):
    """The skeleton of a level, as start writes it. Level 2's is given numpy_gpt's forward, copied from
    numpy_gpt.layers at this moment, with the imports of the helpers it calls."""
    text = resources.files(__package__).joinpath("skeletons", LEVELS[level][0]).read_text(encoding="utf-8")
    if level == "attention-backward":
        forward = inspect.getsource(layers.attention_forward)
        names = sorted(name for name in code_names(layers.attention_forward.__code__) if hasattr(layers, name)
                       and name != "attention_forward")
        modules = [n for n in names if inspect.ismodule(getattr(layers, n))]
        helpers = [n for n in names if n not in modules]
        imports = "".join(f"import {m}\n" for m in modules) + f"from numpy_gpt.layers import {', '.join(helpers)}\n"
        text = text.replace(FORWARD_MARK, imports + "\n\n" + forward.rstrip("\n") + "\n")
    return text


def code_names(code):
    """The global names a function's code reads, its nested code (a generator expression's) included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= code_names(const)
    return names


def start(args):
    path = Path(args.out or LEVELS[args.level][1])
    check_output(path, "--out" if args.out else "the file", folder=False)
    if path.exists() and not args.force:
        raise UserError(f"{path} exists already; grade it with `{PROG} check {path}`, or pass --force to replace it "
                        f"with a fresh skeleton")
    text = skeleton_text(args.level)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    print(f"wrote {path}: {LEVELS[args.level][2]}. Fill in its TODOs, then grade it:\n"
          f"    {PROG} check {path}")
    if args.level == "attention-torch" and importlib.util.find_spec("torch") is None:
        print("note: this level needs PyTorch, which is not installed here (pip install torch)")
    return 0


# ------------------------------------------------------------------------------------------------
# check


def read_learner_file(path):
    """-> (source, its syntax tree); a missing, unreadable or unparsable file is a UserError."""
    if not path.exists():
        raise UserError(f"{path} not found; write one with `{PROG} start attention` (or attention-torch, "
                        f"attention-backward), or pass the path of yours")
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass the Python file to grade")
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; pass a Python file") from None
    try:
        return source, ast.parse(source, filename=str(path))
    except SyntaxError as e:
        line = f": {e.text.strip()}" if e.text and e.text.strip() else ""
        raise UserError(f"{path} line {e.lineno}: {e.msg}{line}; fix it, then check again") from None


def defined_names(tree):
    """The names a module binds at its top level: functions, classes, imports and assignments."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def detect_level(tree, path):
    """Which level a file is, from what it defines: CausalSelfAttention (PyTorch), attention_backward (level 2)
    or attention_forward (level 1)."""
    names = defined_names(tree)
    for name, kind in (("CausalSelfAttention", "torch"), ("attention_backward", "numpy-backward"),
                       ("attention_forward", "numpy-forward")):
        if name in names:
            return kind
    raise UserError(f"{path} defines none of attention_forward, attention_backward or class CausalSelfAttention, so "
                    f"there is nothing to grade; start from a skeleton: `{PROG} start attention`")


def borrowed(tree):
    """What a file takes ready-made instead of writing it: numpy_gpt's or torch_gpt's attention, or PyTorch's
    one-call attention. The grader passes them (they are the reference); a note says so."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("numpy_gpt", "torch_gpt"):
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if a.name in ("attention_forward", "attention_backward", "CausalSelfAttention",
                                       "softmax_backward", "softmax_backward_"))
        elif isinstance(node, (ast.Attribute, ast.Name)) and "scaled_dot_product_attention" in (
                getattr(node, "attr", None), getattr(node, "id", None)):
            found.add("scaled_dot_product_attention")
    return sorted(found)


TITLES = {"numpy-forward": LEVELS["attention"][2], "torch": LEVELS["attention-torch"][2],
          "numpy-backward": LEVELS["attention-backward"][2]}


def load_learner_module(path):
    """Run the learner's file as a module; whatever it raises is check 1's failure."""
    spec = importlib.util.spec_from_file_location(f"learner_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as e:
        hint = " (this level needs PyTorch: pip install torch)" if e.name == "torch" else ""
        raise CheckFailed(f"importing {path.name} failed: no module named {e.name!r}{hint}") from None
    except Exception as e:
        from .grader import describe_exception
        raise CheckFailed(describe_exception(e, path, f"importing {path.name}")) from None
    return module


def check(args):
    path = Path(args.file)
    _, tree = read_learner_file(path)
    kind = detect_level(tree, path)
    print(f"checking {path}: {TITLES[kind]}", flush=True)
    taken = borrowed(tree)
    if taken:
        print(f"note: {path.name} takes {', '.join(taken)} ready-made; it passes, since it is the reference, but the "
              f"exercise is to write it yourself", flush=True)
    try:
        try:
            module = load_learner_module(path)
            for name in {"torch": ["CausalSelfAttention"], "numpy-backward": ["attention_backward"],
                         "numpy-forward": ["attention_forward"]}[kind]:
                if not callable(getattr(module, name, None)):
                    raise CheckFailed(f"{path.name} names {name}, but running it leaves no {name} to call")
            if kind == "torch":
                forward, _ = torch_forward(module.CausalSelfAttention, path)
                backward = None
            else:
                # level 2 keeps the file's forward (numpy_gpt's, as start wrote it) if it has one
                forward_module = module if hasattr(module, "attention_forward") else layers
                forward = numpy_forward(forward_module, path)
                backward = numpy_backward(module, path, forward_module) if kind == "numpy-backward" else None
            check_shapes(forward, backward)
        except CheckFailed:
            say("1. runs, shapes right", "FAIL")
            raise
        check_forward(forward)
        if kind == "torch":
            check_torch_backward(forward)
            attention = module.CausalSelfAttention
        elif kind == "numpy-backward":
            check_backward(forward, backward)
            attention = (forward_module.attention_forward, module.attention_backward)
        else:
            say("3. backward", "--", f"not in this level: the payoff trains with numpy_gpt's attention_backward "
                f"(level 2: `{PROG} start attention-backward`)")

            def your_forward(qkv, n_head):
                """y from your forward; the cache numpy_gpt's backward needs from numpy_gpt's"""
                return module.attention_forward(qkv, n_head)[0], layers.attention_forward(qkv, n_head)[1]
            attention = (your_forward, layers.attention_backward)
        if args.no_payoff:
            say("4. payoff", "--", "skipped (--no-payoff)")
        else:
            from .payoff import run_payoff
            run_payoff(SimpleNamespace(kind=kind, attention=attention), path, args.steps, args.small, args.data)
    except CheckFailed as e:
        print(f"hint: {e}", flush=True)
        return 1
    print("every check passes: your attention is the kid's attention" + (" (the payoff was skipped)"
                                                                         if args.no_payoff else ""))
    return 0


# ------------------------------------------------------------------------------------------------
# the command line


def parser():
    p = ArgumentParser(prog=PROG, formatter_class=HelpFormatter, description=(
        "Write causal self-attention yourself and have it graded against numpy_gpt's own, in float64. "
        "`start LEVEL` writes a skeleton to fill in; `check FILE` grades it: 1 runs with the right shapes, 2 the "
        "forward equals numpy_gpt's (then the properties that name a mistake), 3 the backward equals finite "
        "differences and numpy_gpt's, 4 the payoff: your attention trains the kid beside numpy_gpt's. "
        "See docs/exercise.md."))
    sub = p.add_subparsers(dest="command", required=True, metavar="{start,check}")
    s = sub.add_parser("start", formatter_class=HelpFormatter, help="write a skeleton to fill in",
                       description="Write the skeleton of a level into the current folder.")
    s.add_argument("level", choices=list(LEVELS), help="attention: level 1, attention_forward in NumPy; "
                   "attention-torch: level 1, a CausalSelfAttention module in PyTorch; attention-backward: level 2, "
                   "attention_backward in NumPy, the forward given")
    s.add_argument("--out", default=None, help="the file to write (default: my_attention.py, my_attention_torch.py "
                   "or my_attention_backward.py)")
    s.add_argument("--force", action="store_true", help="replace the file if it exists")
    c = sub.add_parser("check", formatter_class=HelpFormatter, help="grade a file",
                       description="Grade a file written from a skeleton; its level is found from what it defines. "
                       "The checks run in order and stop at the first failure, with a hint.")
    c.add_argument("file", help="the Python file to grade")
    c.add_argument("--no-payoff", action="store_true", help="stop after check 3")
    c.add_argument("--steps", type=int, default=200, help="training steps of the payoff")
    c.add_argument("--small", action="store_true",
                   help="the payoff on a small model (2 layers, 2 heads, 32 wide, 32 characters of context, 4 "
                        "sequences a step) instead of the kid, for a quick run")
    c.add_argument("--data", default=None,
                   help="the text the payoff trains on (default: tinyshakespeare at data/tinyshakespeare.txt, "
                        "downloaded and checked if missing)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.command == "start":
        return start(args)
    if args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    if args.data is not None and not args.no_payoff:        # refused now, not after checks 1 to 3
        with open_input(args.data, "data file", "pass --data with an existing UTF-8 text file"):
            pass
    return check(args)


if __name__ == "__main__":
    run_cli(main)
