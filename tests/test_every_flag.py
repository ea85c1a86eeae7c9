"""Every flag of every command, given every kind of wrong value, fails the way the README promises: one
line on stderr, `error: ...`, that names what is wrong; a non-zero exit (1, or 2 for what argparse
itself refuses); no traceback; and before any real work.

TABLE lists, for each command and each of its flags, the values a user can get wrong (negative, zero,
NaN, inf, huge, the wrong type, no value at all; a missing, unreadable or foreign file, a folder where
a file belongs and the other way round) and the odd-looking values that are meant (0 for --grad-clip
turns clipping off, 0 for --port picks a free port, ...). test_table_covers_every_flag fails when a
command has a flag the table lacks.

"Before any real work": each command runs with a tripwire, an input refused only after every flag has
been checked (a --data or --checkpoint that does not exist, for instance). A bad value must be refused
with its own message, so before the tripwire, and a valid one must get as far as the tripwire's message.
Values that only an input can refute (a prompt's characters against the vocabulary) bring that input.

Speed: the cases run in one child process that imports numpy and torch once, then forks once per case
and runs the command there as `python -m` does (runpy, __name__ == "__main__"), in about 50 ms each.
test_the_runner_runs_commands_as_python_m_does checks that against real `python -m` runs.

Unreadable files: the tests run as root, whom chmod 000 does not stop, so the runner drops the two
capabilities that let root read and write anything (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH); where it
cannot, those cases are skipped.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, corpus_path

HUGE_INT = str(10 ** 12)
HUGE_FLOAT = "1e300"
ERROR, VALID, NOT_RUN = "error", "valid", "valid, not run"   # what a value is: see Case
CASE_TIMEOUT_S = 30        # every case fails in well under a second; a case that trains or measures is stopped


class Case:
    """One command line: a flag given one kind of value.

    expect: ERROR (refused, with a message holding `says`: by default the flag), VALID (accepted: the
    command goes on to its tripwire, whose message it must print) or NOT_RUN (accepted, but the value is
    the tripwire's own flag, so running it would do real work). value None gives the flag no value (for
    a switch: gives the switch). extra: more arguments the case needs, e.g. a real checkpoint.
    """

    def __init__(self, kind, value, expect=ERROR, says=(), extra=()):
        self.kind, self.value, self.expect, self.extra = kind, value, expect, list(extra)
        self.says = (says,) if isinstance(says, str) else tuple(says)

    def argv(self, flag):
        if self.value is None:
            return [*self.extra, flag]                      # last: nothing after it can be taken as its value
        if self.value.startswith("="):
            return [*self.extra, flag + self.value]         # --switch=yes
        return [*self.extra, flag, self.value]


def cases(**kinds):
    return {kind.replace("_", " "): case for kind, case in kinds.items()}


# ------------------------------------------------------------------------------------------------
# the kinds of value, by the kind of flag


def count(minimum, huge=VALID, huge_says=(), huge_extra=()):
    """An integer flag whose values start at minimum (0 or 1)."""
    return cases(negative=Case("negative", "-1"),
                 zero=Case("zero", "0", ERROR if minimum > 0 else VALID),
                 huge=Case("huge", HUGE_INT, huge, huge_says, huge_extra),
                 a_fraction=Case("a fraction", "1.5"), a_word=Case("a word", "ten"), no_value=Case("no value", None))


def seed():
    return cases(negative=Case("negative", "-1"), zero=Case("zero", "0", VALID),
                 largest=Case("largest", str(2 ** 32 - 1), VALID), too_large=Case("too large", str(2 ** 32)),
                 huge=Case("huge", HUGE_INT), a_fraction=Case("a fraction", "1.5"), a_word=Case("a word", "ten"),
                 no_value=Case("no value", None))


def real(negative=ERROR, zero=ERROR, one=None, huge=ERROR, huge_says=()):
    """A float flag: NaN, inf and words are always wrong."""
    kinds = cases(negative=Case("negative", "-1", negative), zero=Case("zero", "0", zero),
                  NaN=Case("NaN", "nan"), inf=Case("inf", "inf"),
                  minus_inf=Case("-inf", "=-inf"),        # attached: argparse takes a lone -inf for a flag
                  huge=Case("huge", HUGE_FLOAT, huge, huge_says), a_word=Case("a word", "fast"),
                  no_value=Case("no value", None))
    if one is not None:
        kinds["one"] = Case("one", "1", one)
    return kinds


def choice(*valid):
    return {"unknown": Case("unknown", "bogus"), **{v: Case(v, v, VALID) for v in valid},
            "no value": Case("no value", None)}


def switch(present=VALID, says=()):
    """A flag without a value (store_true)."""
    return cases(present=Case("present", None, present, says), given_a_value=Case("given a value", "=yes"))


def input_file(content, content_says=(), **more):
    """A file the command reads. content: a file of the wrong kind, refused with content_says."""
    return cases(missing=Case("missing", "nowhere.bin", says=("nowhere.bin", "not found")),
                 a_folder=Case("a folder", "folder", says=("folder", "is a folder")),
                 unreadable=Case("unreadable", "locked.bin", says=("locked.bin", "ermission denied")),
                 wrong_content=Case("wrong content", content, says=content_says or (content,)),
                 no_value=Case("no value", None), **more)


def checkpoint(**more):
    """A weights file: missing, unreadable, foreign, and damaged inside in the ways that once crashed."""
    return input_file("garbage.bin", **cases(
        config_not_an_object=Case("config not an object", "config-list.npz", says=("config-list.npz", "config")),
        config_null=Case("config null", "config-null.npz", says=("config-null.npz", "config")),
        config_other_keys=Case("config other keys", "config-keys.npz", says=("config-keys.npz", "config")),
        vocab_not_code_points=Case("vocab not code points", "vocab-negative.npz", says=("vocab-negative.npz", "vocab")),
        vocab_floats=Case("vocab floats", "vocab-float.npz", says=("vocab-float.npz", "vocab")),
        vocab_text=Case("vocab text", "vocab-text.npz", says=("vocab-text.npz", "vocab")), **more))


def output_folder(new=VALID):
    return cases(a_file=Case("a file", "afile", says="afile"),
                 unwritable=Case("unwritable", "readonly/new", says=("readonly", "ermission denied")),
                 new=Case("new", "new-folder", new), no_value=Case("no value", None))


def output_file(new=VALID):
    return cases(a_folder=Case("a folder", "folder", says="folder"),
                 inside_a_file=Case("inside a file", "afile/x.json", says="afile"),
                 unwritable=Case("unwritable", "readonly/x.json", says=("readonly", "ermission denied")),
                 new=Case("new", "new.json", new), no_value=Case("no value", None))


# ------------------------------------------------------------------------------------------------
# the table: command -> (the arguments every case starts with, the tripwire's message, flag -> kinds)

KID = ["--checkpoint", "kid.npz"]
TEXT = ["--data", "text.txt", "--steps", "2"]
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-batches", "2", "--eval-train-batches", "2"]
MEMORY = "memory"


def training_flags(holding_a_run):
    return {
        "--steps": count(1),
        "--batch-size": count(1, huge=ERROR, huge_says=MEMORY),
        "--seed": seed(),
        "--data": input_file("garbage.bin", content_says=("garbage.bin", "not UTF-8"),
                             too_short=Case("too short", "short.txt", says=("split has",)),
                             empty=Case("empty", "empty.txt", says=("empty.txt", "is empty"))),
        "--out": {**output_folder(), "holding a run": Case("holding a run", "has-run", says=holding_a_run)},
        "--eval-interval": count(1),
        "--eval-batches": count(1, huge=ERROR, huge_says=MEMORY),
        "--eval-train-batches": count(1, huge=ERROR, huge_says=MEMORY),
        "--dtype": choice("float32", "float64"),
        "--lr": real(huge=VALID),
        "--min-lr": {**real(zero=VALID, huge=ERROR, huge_says=("--min-lr", "--lr")),
                     "above --lr": Case("above --lr", "0.5", extra=["--lr", "0.1"], says=("--min-lr", "--lr"))},
        "--warmup-steps": count(0),
        "--weight-decay": real(zero=VALID, huge=VALID),
        "--beta1": real(zero=VALID, one=ERROR),
        "--beta2": real(zero=VALID, one=ERROR),
        "--grad-clip": real(zero=VALID, huge=VALID),
        "--dropout": real(zero=VALID, one=ERROR),
        "--n-layer": count(1, huge=ERROR, huge_says=MEMORY),
        "--n-head": count(1, huge=ERROR, huge_says="divisible"),
        "--n-embd": count(1, huge=ERROR, huge_says=MEMORY),
        "--block-size": count(1, huge=ERROR, huge_says=MEMORY),
        "--resume": switch(says="--resume, but there is no checkpoint"),
        "--grad-accum": count(1, huge=ERROR, huge_says=MEMORY),
        "--sample-prompt": cases(unknown_characters=Case("unknown characters", "snow ☃", says=("--sample-prompt", "'☃'"),
                                                         extra=TEXT),
                                 empty=Case("empty", "", says="--sample-prompt"),
                                 valid=Case("valid", "ROMEO:", VALID)),
    }


def sampling_flags(**checkpoint_kinds):
    return {
        "--checkpoint": checkpoint(**checkpoint_kinds),
        "--prompt": cases(unknown_characters=Case("unknown characters", "snow ☃", says="'☃'", extra=KID),
                          empty=Case("empty", "", VALID)),
        "--prompt-file": input_file("garbage.bin", content_says=("garbage.bin", "not UTF-8"), **cases(
            unknown_characters=Case("unknown characters", "snow.txt", says="'☃'", extra=KID),
            with_prompt=Case("with --prompt", "prompt.txt", says="not both", extra=["--prompt", "a"]))),
        "--max-new-tokens": count(0, huge=ERROR, huge_says=("--max-new-tokens", MEMORY)),
        "--temperature": real(zero=VALID, huge=VALID),
        "--top-k": count(1, huge=ERROR, huge_says="larger than the vocabulary", huge_extra=KID),
        "--top-p": real(one=VALID),
        "--seed": seed(),
        "--num-samples": count(1),
        "--dtype": choice("float32", "float64"),
    }


def model_flags():
    """peek show, export and build: the checkpoint and what goes with it."""
    return {
        "--checkpoint": checkpoint(),
        "--log": input_file("garbage.bin", content_says="garbage.bin", **cases(
            not_a_log=Case("not a log", "list.jsonl", says=("list.jsonl", "lacks")))),
        "--prompt": cases(unknown_characters=Case("unknown characters", "snow ☃", says="'☃'", extra=KID),
                          empty=Case("empty", "", says="the prompt is empty", extra=KID),
                          too_long=Case("too long", "a" * 40, says="context", extra=KID),
                          valid=Case("valid", "ROMEO:", VALID)),
        "--data": input_file("garbage.bin", content_says=("garbage.bin", "not UTF-8"), **cases(
            other_vocabulary=Case("other vocabulary", "snow.txt", says=("snow.txt", "vocabulary lacks", "☃")),
            part_of_the_vocabulary=Case("part of the vocabulary", "short.txt",
                                        says=("short.txt", "lacks characters of the kid's vocabulary")),
            empty=Case("empty", "empty.txt", says=("empty.txt", "is empty")))),
    }


def with_extra(kinds, extra):
    """The same kinds, each given extra arguments (peek's --log and --data are read after the checkpoint)."""
    return {k: Case(c.kind, c.value, c.expect, c.says, [*extra, *c.extra]) for k, c in kinds.items()}


def peek_flags(**more):
    flags = model_flags()
    flags["--log"] = with_extra(flags["--log"], KID)
    flags["--data"] = with_extra(flags["--data"], KID)
    return {**flags, **more}


REPORT_FLAGS = {
    "--out": cases(missing=Case("missing", "nowhere", says="nowhere"),
                   a_file=Case("a file", "afile", says="afile"),
                   no_log=Case("no log", "folder", says=("folder", "log not found")),
                   log_is_a_folder=Case("log is a folder", "report-dirlog", says=("report-dirlog", "is a folder")),
                   unreadable_log=Case("unreadable log", "report-locked", says=("report-locked", "ermission denied")),
                   log_not_UTF_8=Case("log not UTF-8", "report-binary", says="report-binary"),
                   log_not_JSON=Case("log not JSON", "report-text", says=("report-text", "JSON")),
                   log_of_lists=Case("log of lists", "report-lists", says="report-lists"),
                   empty_log=Case("empty log", "report-empty", says=("report-empty", "empty")),
                   log_with_a_negative_time=Case("log with a negative time", "report-negative",
                                                 says=("report-negative", "negative")),
                   log_with_a_numeric_sample=Case("log with a numeric sample", "report-sample5",
                                                  says=("report-sample5", "not text")),
                   no_value=Case("no value", None)),
}


TABLE = {
    "numpy_gpt.train": ([*TINY, "--out", "new-run", "--data", "nowhere.txt"], "data file not found",
                        training_flags("already holds a run")),
    "torch_gpt.train": ([*TINY, "--out", "new-run", "--data", "nowhere.txt"], "data file not found", {
        **training_flags("already holds a run"),
        "--device": choice("cpu", "auto"),
        "--compile": switch(),
        "--bf16": choice("off", "auto"),
        "--cuda-graph": choice("off", "auto"),
    }),
    "numpy_gpt.sample": (["--checkpoint", "nowhere.npz"], "checkpoint not found", sampling_flags()),
    "torch_gpt.sample": (["--checkpoint", "nowhere.npz"], "checkpoint not found", sampling_flags(
        broken_kid_pt=Case("broken kid.pt", "garbage.pt",
                           says=("garbage.pt", "not a tiny-llm weights file or training state")),
        unreadable_kid_pt=Case("unreadable kid.pt", "locked.pt", says=("locked.pt", "ermission denied")))),
    "numpy_gpt.report": ([], None, REPORT_FLAGS),
    "torch_gpt.report": ([], None, REPORT_FLAGS),
    "parity": (["--checkpoint", "nowhere.npz"], "checkpoint not found", {
        "--checkpoint": checkpoint(),
        "--dtype": choice("float64", "float32"),
        "--steps": count(0),
        "--seed": seed(),
        "--json": output_file(),
    }),
    "benchmarks": (["--json", "folder"], "--json", {
        "--quick": switch(),
        "--repeats": count(1),
        "--json": output_file(new=NOT_RUN),
    }),
    "benchmarks.loops": (["--backend", "numpy", "--quick", "--repeats", "0"], "--repeats", {
        "--backend": choice("numpy", "torch", "torch-bf16", "torch-bf16-compile", "torch-mm", "torch-compile"),
        "--quick": switch(),
        "--batch-size": count(1, huge=ERROR, huge_says=MEMORY, huge_extra=["--repeats", "1"]),   # past the tripwire
        "--warmup": count(0),
        "--repeats": count(1, huge=NOT_RUN),
    }),
    "benchmarks.parts": (["--quick", "--repeats", "0"], "--repeats", {
        "--quick": switch(),
        "--repeats": count(1, huge=NOT_RUN),
    }),
    "benchmarks.gpu": (["--repeats", "0"], "--repeats", {
        "--batch-size": count(1),
        "--steps": count(1),
        "--quick": switch(),
        "--json": output_file(),
        "--repeats": count(1, huge=NOT_RUN),
    }),
    "benchmarks.site": (["--checkpoint", "nowhere.npz"], "checkpoint not found", {
        "--checkpoint": checkpoint(),
        "--repeats": count(1),
        "--length": count(1),
        "--screenshots": output_folder(),
    }),
    "peek show": (["show", "--checkpoint", "nowhere.npz"], "checkpoint not found",
                  peek_flags(**{"--figures": output_folder()})),
    "peek export": (["export", "--checkpoint", "nowhere.npz"], "checkpoint not found",
                    peek_flags(**{"--out": output_folder()})),
    "peek build": (["build", "--checkpoint", "nowhere.npz"], "checkpoint not found", peek_flags(**{
        "--export": cases(missing=Case("missing", "nowhere", says="nowhere"),
                          a_file=Case("a file", "afile", says=("afile", "is a file, not an export folder")),
                          not_an_export=Case("not an export", "folder", says=("folder", "no export")),
                          unreadable=Case("unreadable", "locked-dir", says=("locked-dir", "ermission denied")),
                          no_value=Case("no value", None)),
        "--parity": input_file("garbage.bin", content_says=("garbage.bin", "parity")),
        "--out": output_folder()})),
    "numpy_gpt.exercise start": (["start", "attention", "--out", "afile/x.py"], "afile is a file", {
        "--out": cases(a_folder=Case("a folder", "folder", says=("folder", "is a folder")),
                       inside_a_file=Case("inside a file", "afile/y.py", says="afile"),
                       unwritable=Case("unwritable", "readonly/x.py", says=("readonly", "ermission denied")),
                       new=Case("new", "new.py", NOT_RUN), no_value=Case("no value", None)),
        "--force": switch(),
    }),
    # --data is opened before the checks run; a file that is not UTF-8 is refused when the payoff reads it
    "numpy_gpt.exercise check": (["check", "nowhere.py"], "nowhere.py not found", {
        "--no-payoff": switch(),
        "--steps": count(1),
        "--small": switch(),
        "--data": cases(missing=Case("missing", "nowhere.bin", says=("nowhere.bin", "not found")),
                        a_folder=Case("a folder", "folder", says=("folder", "is a folder")),
                        unreadable=Case("unreadable", "locked.bin", says=("locked.bin", "ermission denied")),
                        no_value=Case("no value", None)),
    }),
    "numpy_gpt.ladder": (["--data", "nowhere.txt", "--out", "new-ladder"], "data file not found", {
        "--rungs": cases(unknown=Case("unknown", "bogus", says=("'bogus'", "rungs are")),
                         empty=Case("empty", "", says="rung list"),
                         some=Case("some", "uniform,bigram", VALID), no_value=Case("no value", None)),
        "--steps": {**count(1, huge=ERROR), "largest": Case("largest", "100000", VALID),
                    "too large": Case("too large", "100001")},
        "--eval-interval": count(1),
        "--eval-batches": count(1, huge=ERROR, huge_says=MEMORY),
        "--batch-size": count(1, huge=ERROR, huge_says=MEMORY),
        "--seed": seed(),
        "--data": input_file("garbage.bin", content_says=("garbage.bin", "not UTF-8"),
                             too_short=Case("too short", "short.txt", says=("split has",))),
        "--out": cases(a_file=Case("a file", "afile", says=("afile", "is a file")),
                       new=Case("new", "new-folder", VALID), no_value=Case("no value", None)),
        "--resume": switch(ERROR, says=("--resume", "holds no ladder")),
    }),
    "benchmarks.margins": ([], None, {
        "--paths": cases(unknown=Case("unknown", "bogus", says=("--paths", "'bogus'")),
                         empty=Case("empty", "", says=("--paths", "unknown kernel path")),
                         one_unknown=Case("one unknown", "default,avx3", says=("--paths", "'avx3'")),
                         valid=Case("valid", "default", NOT_RUN), no_value=Case("no value", None)),
    }),
    # --corpus is only checked to be a file; what is in it is read by the run itself
    "benchmarks.ladder_tab": (["--corpus", "nowhere.txt"], "tinyshakespeare not found", {
        "--corpus": cases(missing=Case("missing", "nowhere.bin", says="tinyshakespeare not found"),
                          a_folder=Case("a folder", "folder", says="tinyshakespeare not found"),
                          no_value=Case("no value", None)),
        "--seconds": count(1),
        "--longer": count(1),
    }),
    "peek serve": (["serve", "--dir", "nowhere"], "no site at", {
        "--dir": cases(missing=Case("missing", "nowhere", says="nowhere"),
                       a_file=Case("a file", "afile", says="afile"),
                       no_index=Case("no index.html", "folder", says=("folder", "index.html")),
                       unreadable=Case("unreadable", "locked-dir", says=("locked-dir", "ermission denied")),
                       no_value=Case("no value", None)),
        "--port": count(0, huge=ERROR),
        "--verbose": switch(),
    }),
}


def module_of(command):
    """'peek show' -> 'peek': the module python -m runs (the subcommand is in the table's arguments)."""
    return command.split()[0]


def all_cases():
    """-> [(id, command, flag, Case, module, argv, says)] for every case the table runs."""
    out = []
    for command, (base, tripwire, flags) in TABLE.items():
        for flag, kinds in flags.items():
            for case in kinds.values():
                if case.expect == NOT_RUN:
                    continue
                says = case.says or ((flag,) if case.expect == ERROR else (tripwire,))
                out.append((f"{command} {flag} {case.kind}", command, flag, case, module_of(command),
                            [*base, *case.argv(flag)], says))
    return out


CASES = all_cases()


# ------------------------------------------------------------------------------------------------
# the files the cases read and write, in one folder that is each case's working directory


def make_files(folder):
    from numpy_gpt.machinery.checkpoint import save_weights
    from numpy_gpt.config import GPTConfig
    from numpy_gpt.model import init_params
    text = corpus_path().read_text(encoding="utf-8")[:8000]
    (folder / "text.txt").write_text(text, encoding="utf-8")
    (folder / "short.txt").write_text("abc" * 10, encoding="utf-8")
    (folder / "empty.txt").write_text("", encoding="utf-8")
    (folder / "snow.txt").write_text("snow ☃", encoding="utf-8")
    (folder / "prompt.txt").write_text("ROMEO:", encoding="utf-8")
    (folder / "garbage.bin").write_bytes(b"\xff\xfe not a checkpoint, not UTF-8, not JSON \x00\x01" * 10)
    (folder / "garbage.pt").write_bytes(b"\xff\xfe not a kid.pt \x00\x01" * 10)
    (folder / "list.jsonl").write_text("[1, 2]\n")
    (folder / "afile").write_text("a file, where a folder belongs\n")
    (folder / "folder").mkdir()
    for name in ("locked.bin", "locked.pt"):
        (folder / name).write_bytes(b"unreadable")
        (folder / name).chmod(0)
    (folder / "locked-dir").mkdir(mode=0)
    (folder / "readonly").mkdir(mode=0o555)
    (folder / "has-run").mkdir()
    (folder / "has-run" / "kid.npz").write_bytes(b"a finished run")
    chars = "".join(sorted(set(text)))
    config = GPTConfig(vocab_size=len(chars), block_size=16, n_layer=1, n_head=2, n_embd=16)
    save_weights(folder / "kid.npz", init_params(config, seed=0), config, chars)
    with np.load(folder / "kid.npz", allow_pickle=False) as z:
        arrays = dict(z)
    damaged = {"config-list.npz": ("__config__", np.array("[1, 2]")),
               "config-null.npz": ("__config__", np.array("null")),
               "config-keys.npz": ("__config__", np.array(json.dumps({"vocab_size": len(chars), "width": 16}))),
               "vocab-negative.npz": ("__vocab__", np.full(len(chars), -5, dtype=np.int32)),
               "vocab-float.npz": ("__vocab__", np.arange(len(chars), dtype=np.float32) + 65.5),
               "vocab-text.npz": ("__vocab__", np.array(chars))}
    for name, (key, value) in damaged.items():
        np.savez(folder / name, **{**arrays, key: value})
    reports = {"report-binary": b"\xff\xfe\x00", "report-text": b"not json\n", "report-lists": b"[1, 2]\n",
               "report-empty": b"",
               "report-negative": b'{"step": 0, "train_loss": 4, "val_loss": 4, "elapsed_s": 1, "eval_s": -1}\n',
               "report-sample5": b'{"step": 0, "train_loss": 4, "val_loss": 4, "elapsed_s": 1, "sample": 5}\n'}
    for name, data in reports.items():
        (folder / name).mkdir()
        (folder / name / "log.jsonl").write_bytes(data)
    (folder / "report-dirlog" / "log.jsonl").mkdir(parents=True)
    (folder / "report-locked").mkdir()
    (folder / "report-locked" / "log.jsonl").write_text('{"step": 0}\n')
    (folder / "report-locked" / "log.jsonl").chmod(0)


# ------------------------------------------------------------------------------------------------
# the runner: one process, one fork per case

# modules the commands import, loaded once before forking; never the commands' own modules (runpy
# warns when the module it runs is imported already), nor what imports them (parity imports torch_gpt.train)
PRELOAD = ["numpy", "torch", "torch.distributed", "numpy_gpt.machinery.cli", "numpy_gpt.machinery.checkpoint",
           "numpy_gpt.model", "torch_gpt.model", "peek.analysis", "peek.export", "peek.build"]


def drop_root_file_powers():
    """Make chmod 000 stop this process even as root: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    from the bounding set and the effective set (Linux prctl and capset). -> whether a locked file is
    now unreadable (always true for a user other than root)."""
    import ctypes
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
        # capset: keep every capability we hold but those two, in the effective and permitted sets
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)            # _LINUX_CAPABILITY_VERSION_3, this process
        data = (ctypes.c_uint32 * 6)()
        if libc.capget(header, data) == 0:
            mask = ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
            data[0] &= mask                                        # effective, low 32 capabilities
            data[1] &= mask                                        # permitted
            libc.capset(header, data)
    except (OSError, AttributeError):
        pass
    try:
        open("locked.bin", "rb").close()
        return False
    except PermissionError:
        return True


def run_one(module, argv, out_dir, index):
    """Fork; the child runs `python -m module argv` in this folder -> (exit status, stdout, stderr)."""
    import runpy
    import signal
    import time
    stdout, stderr = out_dir / f"{index}.out", out_dir / f"{index}.err"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:                                        # the child: become `python -m module argv`
        code = 1
        try:
            os.setpgid(0, 0)                            # its own group, so that whatever it starts can be stopped
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(os.open(stdout, os.O_WRONLY | os.O_CREAT, 0o644), 1)
            os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT, 0o644), 2)
            sys.argv = [module, *argv]
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as e:
                if isinstance(e.code, int) or e.code is None:
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
            except BaseException:                       # as the interpreter does with an uncaught exception
                import traceback
                traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    deadline, timed_out = time.monotonic() + CASE_TIMEOUT_S, False
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:   # ended? (not reaped yet)
        if time.monotonic() > deadline:
            timed_out = True
            break
        time.sleep(0.005)
    try:        # the case if it overran, and anything it started; unreaped, its id is still this group's
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, status = os.waitpid(pid, 0)
    code = "timeout" if timed_out else os.waitstatus_to_exitcode(status)
    return code, stdout.read_text(errors="replace"), stderr.read_text(errors="replace")


def runner():
    """Child process: read [(module, argv), ...] as JSON on stdin, run each, print the results as JSON."""
    sys.path.insert(0, str(ROOT))
    jobs = json.load(sys.stdin)
    unreadable = drop_root_file_powers()
    import importlib
    for name in PRELOAD:
        importlib.import_module(name)
    commands = {module if "." in module else module + ".__main__" for module, _ in jobs}
    assert not commands & set(sys.modules), f"preloaded a command's own module: {commands & set(sys.modules)}"
    import tempfile
    out_dir = Path(tempfile.mkdtemp(prefix="runner-output-", dir="."))
    results = [run_one(module, argv, out_dir, i) for i, (module, argv) in enumerate(jobs)]
    sys.stdout.write(json.dumps({"unreadable": unreadable, "results": results}))


RUNNER = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import test_every_flag; test_every_flag.runner()"


def run_cases(folder, jobs):
    result = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(jobs), capture_output=True,
                            text=True, cwd=folder, timeout=1800)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("every-flag")
    make_files(folder)
    return folder


@pytest.fixture(scope="module")
def outcomes(files):
    """Every case's (exit status, stdout, stderr), by id, from one run of the runner."""
    ran = run_cases(files, [(module, argv) for _, _, _, _, module, argv, _ in CASES])
    return ran["unreadable"], {case[0]: r for case, r in zip(CASES, ran["results"])}


def assert_one_line_error(code, stderr, says):
    assert code in (1, 2), f"exit status {code}, not 1 or 2 (a timeout means the command went on working)\n{stderr}"
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one `error: ...` line:\n{stderr}"
    for words in says:
        assert words in lines[0], f"{words!r} not in: {lines[0]}"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_flag(outcomes, case):
    case_id, command, flag, c, module, argv, says = case
    unreadable, results = outcomes
    if "ermission denied" in says and not unreadable:
        pytest.skip("this process can read a chmod 000 file (root, and the capabilities could not be dropped)")
    code, _, stderr = results[case_id]
    assert_one_line_error(code, stderr, says)


# ------------------------------------------------------------------------------------------------
# the table covers every flag, and the runner is python -m


def command_parser(command):
    """The argparse parser a command's main() uses."""
    import importlib
    module, *sub = command.split()
    package_main = {"parity": "parity.__main__", "benchmarks": "benchmarks.__main__", "peek": "peek.__main__",
                    "numpy_gpt.exercise": "numpy_gpt.exercise.__main__", "numpy_gpt.ladder": "numpy_gpt.ladder_run"}
    p = importlib.import_module(package_main.get(module, module)).parser()
    if sub:
        subparsers = next(a for a in p._actions if a.choices and isinstance(a.choices, dict))
        p = subparsers.choices[sub[0]]
    return p


@pytest.mark.parametrize("command", list(TABLE))
def test_table_covers_every_flag(command):
    p = command_parser(command)
    flags = {max(a.option_strings, key=len) for a in p._actions if a.option_strings and a.dest != "help"}
    assert flags == set(TABLE[command][2]), (f"flags without a row: {sorted(flags - set(TABLE[command][2]))}; "
                                             f"rows without a flag: {sorted(set(TABLE[command][2]) - flags)}")


@pytest.mark.parametrize("command", list(TABLE))
def test_every_flag_says_what_it_does(command):
    """--help explains every flag, not just its name and default."""
    p = command_parser(command)
    bare = sorted(max(a.option_strings, key=len) for a in p._actions if a.option_strings and not a.help)
    assert not bare, f"{command}: flags with no help text: {bare}"


def test_the_runner_runs_commands_as_python_m_does(files):
    """The forked runs print what real `python -m` runs print, with the same exit status."""
    picked = [c for c in CASES if c[0] in ("numpy_gpt.train --lr NaN", "peek serve --port a word",
                                           "numpy_gpt.sample --checkpoint config null")]
    ran = run_cases(files, [(module, argv) for *_, module, argv, _ in picked])["results"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for (_, _, _, _, module, argv, _), (code, stdout, stderr) in zip(picked, ran):
        real = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, cwd=files,
                              env=env, timeout=120)
        assert (real.returncode, real.stdout, real.stderr) == (code, stdout, stderr)


# ------------------------------------------------------------------------------------------------
# training on a text whose vocabulary lacks ROMEO:


def test_trains_on_a_text_without_romeo(files, tmp_path):
    """torch_gpt.train samples at every evaluation; its default prompt must fit any text."""
    from numpy_gpt.machinery.corpus import default_prompt
    text = (files / "text.txt").read_text(encoding="utf-8").lower()      # no R, O, M, E: ROMEO: cannot be the prompt
    (tmp_path / "lower.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "torch_gpt.train", "--data", str(tmp_path / "lower.txt"),
                             "--out", str(out), *TINY, "--steps", "2", "--eval-interval", "1", "--device", "cpu"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    prompt = default_prompt("".join(sorted(set(text))))
    assert prompt != "ROMEO:" and set(prompt) <= set(text)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [0, 1, 2]
    assert all(e["sample"].startswith(prompt) and len(e["sample"]) > len(prompt) for e in log)
