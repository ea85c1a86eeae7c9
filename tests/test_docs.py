"""README.md and docs/*.md say what is true: their commands exist, their links resolve, and they tell no
history.

- Every command in a ```bash block that runs a module (`python -m MODULE ...`, `torchrun ... -m MODULE`)
  names a module that exists, a subcommand its parser offers, and only flags its `--help` lists; an
  output flag (--out, --figures, --json, --screenshots) points at a path git ignores, so that no
  command shown overwrites a tracked file; a test file it names exists. The commands are not run.
- Every relative link and picture, in markdown or in an <img> tag, names a file of the repository,
  and a #anchor names a heading of the page it points at (GitHub's heading ids).
- No page tells history ("it was", "no longer", ...), and a CPU model is named only on the line of a
  measurement (one that says "measured" or opens with "Machine:").

Each checker is also run on planted mistakes, so that each test can fail.
"""
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
SHELL_LANGS = {"bash", "sh", "shell", "console"}
OUTPUT_FLAGS = {"--out", "--figures", "--json", "--screenshots"}
PYTHONS = {"python", "python3"}


def bash_blocks(text):
    """The bodies of the page's ```bash (sh, shell, console) code blocks."""
    return [body for lang, body in FENCE.findall(text) if lang in SHELL_LANGS]


def commands(block):
    """Each simple command of a bash block, as its words: continuation lines joined, comments dropped,
    split at && || ; and |."""
    text = block.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError as e:  # an unclosed quote: a command that cannot run as written
            out.append(["<unparsable>", line, str(e)])
            continue
        command = []
        for w in words:
            if w in {"&&", "||", ";", "|"}:
                out.append(command)
                command = []
            elif w.endswith(";") and len(w) > 1:
                command.append(w[:-1])
                out.append(command)
                command = []
            else:
                command.append(w)
        out.append(command)
    return [c for c in out if c]


def module_call(words):
    """(module, its arguments) for `python -m MODULE ARGS` or `torchrun ... -m MODULE ARGS`, else None.
    Environment assignments and wrappers such as `nice` before python are skipped."""
    for i, w in enumerate(words):
        if (w in PYTHONS or w == "torchrun") and "-m" in words[i + 1:]:
            j = words.index("-m", i + 1)
            if j + 1 < len(words):
                return words[j + 1], words[j + 2:]
    return None


HELP_SCRIPT = r"""
import contextlib, io, json, runpy, sys
out = {}
for module, sub in json.loads(sys.argv[1]):
    sys.argv = [module] + ([sub] if sub else []) + ["--help"]
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code
    except BaseException as e:
        code = repr(e)
    out[module + " " + (sub or "")] = buf.getvalue() if code in (0, None) else None
print(json.dumps(out))
"""
_HELP = {}


def fetch_help(keys):
    """`python -m MODULE [SUBCOMMAND] --help` for each (module, subcommand) key, all in one child process
    run from the repository root (torch loads once, not once a module)."""
    keys = sorted({k for k in keys if k not in _HELP}, key=lambda k: (k[0], k[1] or ""))
    if not keys:
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", HELP_SCRIPT, json.dumps(keys)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    found = json.loads(r.stdout.strip().splitlines()[-1])
    for module, sub in keys:
        _HELP[(module, sub)] = found[module + " " + (sub or "")]


def help_text(module, subcommand=None):
    """The --help of MODULE [SUBCOMMAND]; None where it fails. The first call fetches every help that the
    pages' commands need, at once."""
    key = (module, subcommand)
    if key not in _HELP:
        calls = [c for c in (module_call(w) for _, w in all_commands()) if c and c[1]]
        if subcommand is None:
            fetch_help([key] + [(m, None) for m, _ in calls if known_module(m)])
        else:
            fetch_help([key] + [(m, a[0]) for m, a in calls
                                if known_module(m) and _HELP.get((m, None)) and a[0] in subcommands(_HELP[(m, None)])])
    return _HELP[key]


def known_module(module):
    """Whether MODULE can be found (its package imported to look)."""
    if not re.fullmatch(r"[A-Za-z_][\w.]*", module) or importlib.util.find_spec(module.split(".")[0]) is None:
        return False
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def subcommands(help_out):
    """The choices of a parser's subcommands: the {a,b,c} that opens its positional arguments."""
    m = re.search(r"^positional arguments:\n\s+\{([\w,-]+)\}", help_out, re.M)
    return m.group(1).split(",") if m else []


def flags_of(help_out):
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help_out))


def is_ignored(path):
    """Whether git ignores PATH, as a file or as a folder of files."""
    for p in (path, path.rstrip("/") + "/probe"):
        r = subprocess.run(["git", "check-ignore", "-q", "--no-index", p], cwd=ROOT, capture_output=True)
        if r.returncode == 0:
            return True
        if r.returncode > 1:  # not a git checkout: the folders .gitignore gives to outputs
            return Path(path).parts[0] in {"out", "site"}
    return False


def command_problems(words):
    """What is wrong with one command as written, in one line each; [] when nothing is."""
    if words[0] == "<unparsable>":
        return [f"cannot be parsed ({words[2]}): {words[1]}"]
    problems = []
    for w in words:
        if re.fullmatch(r"tests/[\w/]+\.py(::\w+)?", w) and not (ROOT / w.split("::")[0]).is_file():
            problems.append(f"names {w}, which does not exist")
    call = module_call(words)
    if call is None:
        return problems
    module, args = call
    shown = " ".join(["-m", module, *args])
    if not known_module(module):
        return problems + [f"`{shown}`: no module {module}"]
    if not args or module in {"pip", "venv", "pytest", "http.server"}:
        return problems  # a bare command is not run, even for --help: it might train
    top = help_text(module)
    if top is None:
        return problems + [f"`{shown}`: `python -m {module} --help` fails"]
    sub = None
    choices = subcommands(top)
    if choices:
        if args[0] not in choices:
            return problems + [f"`{shown}`: {module} has no subcommand {args[0]!r} (it has {', '.join(choices)})"]
        sub = args[0]
        args = args[1:]
    accepted = flags_of(help_text(module, sub) if sub else top)
    for i, a in enumerate(args):
        if not a.startswith("-") or re.fullmatch(r"-\d.*", a):
            continue
        flag = a.split("=", 1)[0]
        if flag not in accepted:
            problems.append(f"`{shown}`: {module}{' ' + sub if sub else ''} takes no flag {flag}")
        if flag in OUTPUT_FLAGS:
            value = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
            if value and not value.startswith(("/", "$", "~")) and not is_ignored(value):
                problems.append(f"`{shown}`: {flag} {value} writes where git tracks files")
    return problems


def all_commands():
    for page in PAGES:
        for block in bash_blocks(page.read_text(encoding="utf-8")):
            for words in commands(block):
                yield page.relative_to(ROOT), words


@pytest.mark.parametrize("page,words", list(all_commands()),
                         ids=lambda x: str(x) if isinstance(x, Path) else " ".join(x)[:60])
def test_every_command_shown_exists(page, words):
    problems = command_problems(words)
    assert not problems, f"{page}: " + "; ".join(problems)


def test_the_pages_show_commands():
    """The pages hold commands at all, so that the test above cannot pass on nothing."""
    found = [w for _, w in all_commands() if module_call(w)]
    assert len(found) >= 20, found


def test_a_wrong_command_is_caught():
    assert command_problems(["python", "-m", "peek", "show", "--figures", "out/figures"]) == []
    assert command_problems(["python", "-m", "no_such_module"])
    assert command_problems(["python", "-m", "numpy_gpt.no_such_module"])
    assert command_problems(["python", "-m", "peek", "shw"])
    assert command_problems(["python", "-m", "peek", "show", "--figurez", "out/figures"])
    assert command_problems(["python", "-m", "numpy_gpt.sample", "--prompt", "ROMEO:", "--top-q", "3"])
    # writes over a tracked folder
    assert command_problems(["python", "-m", "peek", "show", "--figures", "docs/img"])
    assert command_problems(["pytest", "tests/test_no_such_file.py"])
    block = 'torchrun --standalone --nproc_per_node=2 \\\n  -m torch_gpt.train --stepz 3   # comment\n'
    assert [command_problems(c) for c in commands(block)][0]
    assert commands("a && b --x 'y z' # c\nc; d") == [["a"], ["b", "--x", "y z"], ["c"], ["d"]]


# ---- links -------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMG = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", re.I)
HREF = re.compile(r"<a\b[^>]*\bhref=\"([^\"]+)\"", re.I)


def prose(text):
    """The page without its fenced code blocks and inline code spans, where a link is no link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading):
    """GitHub's id for a heading: its text, lower case, without punctuation, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text):
    seen, ids = {}, set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M),
                         re.M):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        ids.add(base if n == 0 else f"{base}-{n}")
    ids.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    return ids


def link_problems(page, text):
    problems = []
    body = prose(text)
    targets = LINK.findall(body) + IMG.findall(body) + HREF.findall(body)
    for target in targets:
        if re.match(r"[a-z][\w+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if path and not dest.exists():
            problems.append(f"{target}: no such file")
            continue
        if path and ROOT not in dest.parents and dest != ROOT:
            problems.append(f"{target}: outside the repository")
            continue
        target_text = text if dest == page else dest.read_text(encoding="utf-8") if dest.suffix == ".md" else None
        if anchor and target_text is not None and anchor not in anchors(target_text):
            problems.append(f"{target}: {dest.name} has no heading #{anchor}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    problems = link_problems(page, page.read_text(encoding="utf-8"))
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_a_broken_link_is_caught(tmp_path):
    page = ROOT / "docs" / "planted.md"  # never written: the text is passed in
    good = "# Top\n\n## A `flag`, and more\n\nSee [it](#a-flag-and-more), [top](#top), ![p](img/x.png).\n"
    assert link_problems(page, good.replace("img/x.png", "../README.md")) == []
    assert link_problems(page, good)  # docs/img/x.png does not exist
    assert link_problems(page, "[x](../README.md#no-such-heading)")
    assert link_problems(page, "[x](#nowhere)\n# Somewhere\n")
    assert link_problems(page, '<img src="no-such.png">')
    assert link_problems(page, "`[in code](nowhere.md)` is not a link") == []


def test_the_pages_link_to_every_docs_page():
    """README.md links to every page in docs/, and every picture in docs/img/ is shown somewhere."""
    readme = prose((ROOT / "README.md").read_text(encoding="utf-8"))
    linked = {t.partition("#")[0] for t in LINK.findall(readme)}
    missing = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in linked]
    assert not missing, f"README.md links to no docs/{missing}"
    shown = set()
    for page in PAGES:
        body = prose(page.read_text(encoding="utf-8"))
        for t in LINK.findall(body) + IMG.findall(body):
            shown.add((page.parent / t.partition("#")[0]).resolve())
    unshown = [p.name for p in sorted((ROOT / "docs" / "img").glob("*")) if p.resolve() not in shown]
    assert not unshown, f"pictures in docs/img/ that no page shows: {unshown}"


# ---- history -----------------------------------------------------------------------------------------

HISTORY = ["it was", "no longer", "before this change", "earlier commit", "another session",
           "earlier session", "later session", "previously", "formerly", "used to be"]
CPU_MODEL = re.compile(r"\b(xeon|epyc|ryzen|threadripper|opteron|core i[3579]|apple m[1-4])\b", re.I)


def history_problems(text):
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        low = line.lower()
        for phrase in HISTORY:
            if re.search(r"\b" + re.escape(phrase) + r"\b", low):
                problems.append(f"line {n}: {phrase!r}: {line.strip()[:80]}")
        if CPU_MODEL.search(line) and not re.search(r"\bmeasured\b|^\s*machine:", low):
            problems.append(f"line {n}: a CPU model outside a measurement's line: {line.strip()[:80]}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_tells_history(page):
    problems = history_problems(page.read_text(encoding="utf-8"))
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_history_is_caught():
    assert history_problems("The kid learns.\nMachine: AMD EPYC, 2 cores\nMeasured on an Intel Xeon.") == []
    assert history_problems("It was 100 batches.")
    assert history_problems("This is no longer true.")
    assert history_problems("On an earlier commit it took longer.")
    assert history_problems("In another session the run took 14.8 minutes.")
    assert history_problems("the old EPYC is faster")
