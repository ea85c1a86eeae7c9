"""The ladder page's data (peek/web/ladder.html, ladder.js): what the tab trains, and on what.

    TAB            the tab's sizes and training settings; tests/test_train_js.py trains numpy_gpt at them
    tab_text       the slice of tinyshakespeare that ships with the site, and its vocabulary
    ladder_table   the table of a `python -m numpy_gpt.ladder` run (its ladder.json), for the page
    write_ladder   site/data/ladder.json (sizes, settings, where each first weight lies, the ladder's
                   table), ladder.txt (the slice) and ladder-init.bin (rungs 1 and 2's first weights)

The tab trains rungs 1 and 2 exactly as numpy_gpt.ladder.train_rung does at these sizes, in float64.
NumPy draws the first weights (numpy_gpt.ladder.init_rung; its normal sampler is not in rng.js), and
the page starts from them; everything after that, batches included, the page computes itself.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from numpy_gpt.machinery.checkpoint import atomic_write
from numpy_gpt.data import CharTokenizer
from numpy_gpt.machinery.corpus import DEFAULT_CORPUS, TINYSHAKESPEARE_SHA256

# The first 150,000 characters of tinyshakespeare (150 KB, 3% of the site's 5 MB next to the kid's 3.3 MB
# of weights): 135,000 to train on, the last 15,000 to validate. Rung 2 sees 512 characters a step, so
# its 2,000 steps pass over the training part about 8 times, and the bigram's 4,225 cells get 32 examples
# each on average: enough that the val loss follows the train loss down instead of parting from it.
TAB_CHARS = 150_000

# The tab's model: the kid's 65 characters, 32 of context and 32 channels (the kid has 128 and 128), in
# batches of 16 (the ladder's 32). Rung 2's step is then about a thousandth of the kid's multiply-adds,
# tens of milliseconds in a tab, and its 2,000 steps take a minute or two (benchmarks/ladder_tab.py).
# The rates follow the ladder's schedule (warmup, cosine down to lr/100) with a larger peak: at the
# ladder's 3e-3 the bigram is still far from its floor after 2,000 steps; at 3e-2 it gets within a few
# hundredths of it in a few hundred, and rung 2 at 1e-2 passes the bigram within its 2,000.
TAB = {
    "seed": 1337, "batch_size": 16, "block_size": 32, "n_embd": 32,
    "warmup_steps": 100, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "grad_clip": 1.0,
    "eval_batches": 4, "eval_interval": 50,
    "rungs": {"bigram": {"lr": 3e-2, "steps": 1000}, "attention": {"lr": 1e-2, "steps": 2000}},
}
TAB_RUNGS = tuple(TAB["rungs"])


def rung_settings(rung):
    """-> (config, settings) of a rung in the tab: numpy_gpt.ladder's GPTConfig, and train.js's settings
    (train_step's), which numpy_gpt.ladder.train_rung takes as its keyword arguments."""
    from numpy_gpt import ladder
    config = ladder.rung_config(rung, block_size=TAB["block_size"], n_embd=TAB["n_embd"])
    r = TAB["rungs"][rung]
    settings = {"seed": TAB["seed"], "batch_size": TAB["batch_size"], "steps": r["steps"], "lr": r["lr"],
                "min_lr": r["lr"] / 100, "warmup_steps": TAB["warmup_steps"], "weight_decay": TAB["weight_decay"],
                "beta1": TAB["beta1"], "beta2": TAB["beta2"], "grad_clip": TAB["grad_clip"]}
    return config, settings


def find_corpus():
    """tinyshakespeare's path: $TINY_LLM_CORPUS, else data/tinyshakespeare.txt -> a Path, or None where
    neither is tinyshakespeare (checked by its sha256)."""
    for candidate in (os.environ.get("TINY_LLM_CORPUS"), DEFAULT_CORPUS):
        if candidate and Path(candidate).is_file():
            data = Path(candidate).read_bytes()
            if hashlib.sha256(data).hexdigest() == TINYSHAKESPEARE_SHA256:
                return Path(candidate)
    return None


def tab_text(corpus_text):
    """tinyshakespeare's text -> (the tab's slice, the vocabulary: the whole corpus's sorted characters)."""
    return corpus_text[:TAB_CHARS], CharTokenizer.from_text(corpus_text).chars


# where `python -m numpy_gpt.ladder` writes its run by default (its --out)
DEFAULT_LADDER_RUN = Path("out-ladder") / "ladder.json"


def ladder_table(path=DEFAULT_LADDER_RUN):
    """A ladder run's ladder.json -> {"caption", "rows": one dict of display strings per finished rung}, or
    None where there is no run at path, or it is not one."""
    try:
        run = json.loads(Path(path).read_text(encoding="utf-8"))
        s, results = run["settings"], run["results"]
        from numpy_gpt.ladder_run import WHAT
        rows, previous = [], None
        for i, rung in enumerate(run["rungs"]):
            if rung not in results:
                continue
            r = results[rung]
            rows.append({"rung": f"{i} {rung}", "adds": WHAT[rung], "parameters": f"{r['parameters']:,}",
                         "val loss": f"{r['val_loss']:.3f}",
                         "bought (nats)": "" if previous is None else f"{previous - r['val_loss']:+.3f}",
                         "train loss": f"{r['train_loss']:.3f}"})
            previous = r["val_loss"]
        text = "all of tinyshakespeare" if run["data"]["sha256"] == TINYSHAKESPEARE_SHA256 else "its text"
        caption = (f"python -m numpy_gpt.ladder: {s['steps']:,} steps of {s['batch_size']} sequences of 128 characters "
                   f"for every rung, on {text}; losses in nats per character, the mean over {s['eval_batches']} "
                   f"fixed batches of each split.")
    except (OSError, ValueError, KeyError, TypeError, ImportError):
        return None
    return {"caption": caption, "rows": rows} if rows else None


def write_ladder(data_dir, corpus=None, table=None):
    """Write ladder.json, ladder.txt and ladder-init.bin into data_dir. corpus: tinyshakespeare's path, or
    None to look for it (find_corpus); without it only ladder.json is written, saying so, and the page
    says how to build with it. table: the ladder run's table (ladder_table), or None to read the run at
    DEFAULT_LADDER_RUN if there is one."""
    data_dir = Path(data_dir)
    corpus = corpus or find_corpus()
    manifest = {"format": "tiny-llm ladder tab", "version": 1, "text": None,
                "table": table if table is not None else ladder_table()}
    if corpus is not None:
        from numpy_gpt import ladder
        text, vocab = tab_text(Path(corpus).read_text(encoding="utf-8"))
        atomic_write(data_dir / "ladder.txt", lambda f: f.write(text.encode("utf-8")))
        chunks, offset, rungs = [], 0, {}
        for rung in TAB_RUNGS:
            config, settings = rung_settings(rung)
            params = ladder.init_rung(rung, config, TAB["seed"], np.float64)
            tensors = []
            for name, p in params.items():
                tensors.append({"name": name, "shape": list(p.shape), "offset": offset, "length": p.size})
                chunks.append(p.astype("<f8").tobytes())
                offset += 8 * p.size
            rungs[rung] = {"config": config.to_dict(), "settings": settings, "init": tensors}
        atomic_write(data_dir / "ladder-init.bin", lambda f: [f.write(c) for c in chunks])
        manifest.update({"text": {"file": "ladder.txt", "chars": len(text), "corpus": Path(corpus).name},
                         "vocab": vocab, "init": {"file": "ladder-init.bin", "bytes": offset},
                         "eval_batches": TAB["eval_batches"], "eval_interval": TAB["eval_interval"],
                         "rungs": rungs})
    atomic_write(data_dir / "ladder.json", lambda f: f.write(json.dumps(manifest).encode()))
    return manifest
