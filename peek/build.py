"""python -m peek build: the static site that walks a reader through the kid in ten steps.

    site/index.html, site/1-task.html ... site/10-playground.html   the pages
    site/style.css, site/site.js                                     the pages' look and code
    site/kid.js, site/ahead.js, site/rng.js                          the kid in JavaScript (ahead.js: its worker)
    site/ladder.html, ladder.js, train.js, data/ladder.*             the ladder's rungs 1 and 2, trained in the tab
    site/data/peek.json, weights.json, weights.bin                   the export (peek.export)
    site/data/parity.json                                            parity's summary, when given

Plain HTML, CSS and JavaScript, every file local and every URL relative: the folder works from
any static host, and nothing is fetched from anywhere else. Step 6 shows numpy_gpt's own source,
read at build time, so it never goes stale.
"""
import html
import inspect
import json
import shutil
from pathlib import Path

from numpy_gpt import layers, model
from numpy_gpt.checkpoint import atomic_write
from numpy_gpt.config import UserError, open_input

from .export import load_export, staged, write_export_files
from .ladder_tab import write_ladder

WEB = Path(__file__).parent / "web"
ASSETS = ("style.css", "site.js", "kid.js", "ahead.js", "rng.js", "train.js", "ladder.js", "ladder.html")

STEPS = [
    ("task", "The task"), ("vocabulary", "The vocabulary"), ("embeddings", "Embeddings"),
    ("positions", "Positions"), ("attention", "Attention"), ("block", "The block"),
    ("letters", "Back to letters"), ("learning", "Watch it learn"), ("behind", "Behind the scenes"),
    ("playground", "The playground"),
]


def page_name(n):
    return f"{n}-{STEPS[n - 1][0]}.html"


def build_site(out, export=None, parity=None):
    """Write the site into out from an export folder (checked first) -> the list of pages written.

    export: a folder written by peek.export, or a (data, params, config, chars) tuple to write into
    out/data. parity: a parity --json summary, or None.

    The site is written whole into a hidden folder inside out first, then each file is moved into
    place, once every place has been found writable: a build that fails leaves the old site as it was.
    """
    out = Path(out)
    with staged(out, remove=[] if parity is not None else [Path("data") / "parity.json"]) as stage:
        pages = write_site(stage, export, parity)
    return [out / page.name for page in pages]


def write_site(out, export, parity):
    """build_site's files, written into the empty folder out -> the pages' paths."""
    if isinstance(export, tuple):
        (out / "data").mkdir()
        write_export_files(out / "data", *export)
    else:
        data, _ = load_export(export)                       # refuses a missing or corrupt export
        (out / "data").mkdir(parents=True, exist_ok=True)
        for name in ("peek.json", "weights.json", "weights.bin"):
            shutil.copyfile(Path(export) / name, out / "data" / name)
    data, _ = load_export(out / "data")
    if parity is not None:
        summary = read_parity(parity)
        atomic_write(out / "data" / "parity.json", lambda f: f.write(json.dumps(summary).encode()))
    for name in ASSETS:
        shutil.copyfile(WEB / name, out / name)
    write_ladder(out / "data")                             # the ladder page's text and first weights
    pages = [("index.html", index_page(data))]
    pages += [(page_name(n), page(n, BODIES[key](data), data, parity is not None))
              for n, (key, _) in enumerate(STEPS, 1)]
    for name, text in pages:
        atomic_write(out / name, lambda f: f.write(text.encode()))
    return [out / name for name, _ in pages]


def read_parity(path, checkpoint="out/kid.npz"):
    """A parity --json summary, checked -> its dict. checkpoint: the kid the hint tells parity to load."""
    fix = f"write it with `python -m parity --checkpoint {checkpoint} --json {path}`, or leave --parity out"
    with open_input(path, "parity summary", fix) as f:
        data = f.read()
    try:
        summary = json.loads(data)
        [(s["section"], s["tensors"], s["worst"], float(s["max_rel"]), float(s["tol"])) for s in summary["sections"]]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a parity --json summary ({type(e).__name__}: {e}); {fix}") from None
    return summary


# ------------------------------------------------------------------------------------------------
# the pages


def layout(title, body, step=0, has_parity=False):
    nav = "".join(f'<a href="{page_name(n)}"{" aria-current=page" if n == step else ""} title="{html.escape(t)}">'
                  f'{n}</a>' for n, (_, t) in enumerate(STEPS, 1))
    prev_next = ""
    if step:
        prev = f'<a href="{page_name(step - 1)}">&larr; {step - 1}. {STEPS[step - 2][1]}</a>' if step > 1 else \
            '<a href="index.html">&larr; start</a>'
        nxt = f'<a href="{page_name(step + 1)}">{step + 1}. {STEPS[step][1]} &rarr;</a>' if step < len(STEPS) else ""
        prev_next = f'<nav class="prevnext">{prev}{nxt}</nav>'
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · peek at the kid</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="style.css">
</head>
<body data-step="{step}" data-parity="{'yes' if has_parity else 'no'}">
<header><a class="home" href="index.html">peek at the kid</a><nav class="steps">{nav}</nav></header>
<main>
{body}
<div id="error" class="error" hidden></div>
</main>
<footer>{prev_next}</footer>
<script type="module" src="site.js"></script>
</body>
</html>
"""


def page(n, body, data, has_parity):
    return layout(f"{n}. {STEPS[n - 1][1]}", f"<h1>{n}. {STEPS[n - 1][1]}</h1>\n{body}", n, has_parity)


def index_page(d):
    c = d["config"]
    items = "".join(f'<li><a href="{page_name(n)}">{t}</a></li>' for n, (_, t) in enumerate(STEPS, 1))
    step = d["checkpoint"]["step"]
    return layout("peek at the kid", f"""<h1>Peek at the kid</h1>
<p>The kid is a small GPT that writes like Shakespeare, one character at a time. It has
{d['n_params']:,} numbers in it, learned from examples. These ten steps take it apart on its real
weights ({html.escape(d['checkpoint']['file'])}{f', step {step}' if step is not None else ''}): what it reads, what it
computes, and how it learned. The last step runs it in this tab.</p>
<p class="facts">{c['vocab_size']} characters · {c['block_size']} characters of context ·
{c['n_layer']} layers · {c['n_head']} heads · {c['n_embd']} wide</p>
<ol class="toc">{items}</ol>
<p><a href="ladder.html">The ladder</a>: the kid built up one idea at a time, its first rungs trained in this tab.</p>""")


def code_block(*functions):
    """numpy_gpt's source of each function, as it is in the repository today."""
    return "".join(f'<pre class="code"><code>{html.escape(inspect.getsource(f))}</code></pre>' for f in functions)


def body_task(d):
    return """<p>The kid reads some text and guesses the next character. That is all it does: it gives every
character in its vocabulary a probability. Training made the right characters likely. Writing is
guessing again and again, each guess added to the text.</p>
<p>Below is text the kid never trained on (from the held-out part of the corpus). Each character is
coloured by how surprised the kid was to see it: dark is a bad guess. Point at a character to
see the kid's top guesses just before it.</p>
<div id="passage" class="passage"></div>
<div id="guesses" class="panel"></div>
<p id="passage-summary" class="note"></p>"""


def body_vocabulary(d):
    return """<p>The kid knows only the characters of its training text, each with a number, its id. The
model never sees a letter, only ids. The vocabulary is the sorted set of characters; bars show
how often each one occurs in the text.</p>
<div id="vocab" class="vocab"></div>
<p id="vocab-summary" class="note"></p>"""


def body_embeddings(d):
    return """<p>The first layer turns each id into a list of numbers, its <em>embedding</em>: one row of the
table <code>wte</code>. Training moved these numbers so that characters used alike get similar
rows. The map shows each character's row squeezed onto the two directions in which the rows
differ most (principal component analysis). Point at a character to see its numbers and its
nearest neighbours.</p>
<div class="two"><div id="embedding-map" class="chart"></div><div id="embedding-detail" class="panel"></div></div>"""


def body_positions(d):
    return """<p>Characters alone carry no order, so the kid adds a second learned vector for each position
in its context: one row of <code>wpe</code>. The input to the first layer at position t is
<code>wte[id] + wpe[t]</code>. The map shows how similar every pair of position vectors is (the
cosine: 1 the same direction, 0 unrelated, -1 opposite). Nearby positions end up alike.</p>
<div class="two"><figure class="plain"><canvas id="position-map" class="heat" width="512" height="512"></canvas>
<figcaption class="note">Position 0 is at the top left; each row and column is one position.</figcaption></figure>
<div id="position-detail" class="panel"></div></div>
<h2>Each position against the next</h2>
<div id="position-line" class="chart"></div>"""


def body_attention(d):
    return """<p>Attention is how one position looks back at earlier ones. In every layer, each head turns
each position into a query, a key and a value. A position's query is compared with the keys of
itself and every earlier position; a softmax turns the scores into weights that add up to 1, and
the position takes the weighted sum of their values. Later positions are masked: the kid may not
look ahead.</p>
<p>Type a prompt: the kid runs in this tab and draws, for every layer and head, a row per position
(the query) and a column per earlier position (the key).</p>
<label class="field">prompt <input id="attention-prompt" type="text" maxlength="128" spellcheck="false"></label>
<p id="attention-status" class="note"></p>
<div id="attention-grid" class="grid"></div>"""


def body_block(d):
    return f"""<p>A block is two steps, each added back onto its input, the <em>residual stream</em>:
<code>x = x + attn(ln_1(x))</code>, then <code>x = x + mlp(ln_2(x))</code>. LayerNorm rescales each
position's vector to mean 0 and variance 1, then by learned weights. The MLP widens each vector
fourfold, bends it with a GELU and narrows it back. The kid stacks {d['config']['n_layer']} blocks.</p>
<p>This is numpy_gpt's code, read from its source when this site was built. Each layer is a forward
function and a backward function; the backward computes the gradients that training follows.</p>
<h2>The block in the model</h2>
<p>From <code>gpt_forward</code> (the loop over layers) and <code>gpt_backward</code> (the same steps in
reverse):</p>
{code_block(model.gpt_forward, model.gpt_backward)}
<h2>LayerNorm</h2>{code_block(layers.layernorm_forward, layers.layernorm_backward)}
<h2>Linear</h2>{code_block(layers.linear_forward, layers.linear_backward)}
<h2>Attention</h2>{code_block(layers.attention_forward, layers.attention_backward)}
<h2>GELU</h2>{code_block(layers.gelu_forward_textbook, layers.gelu_backward_textbook)}
<h2>The residual connection</h2>{code_block(layers.residual_forward, layers.residual_backward)}
<h2>The numbers in block 0</h2>
<div id="block-params"></div>"""


def body_letters(d):
    return """<p>After the last block, a final LayerNorm and one Linear layer (<code>lm_head</code>) turn
the last position's vector into one score per character, the <em>logits</em>. Softmax turns
scores into probabilities. Three settings then change what gets drawn:</p>
<ul><li><b>temperature</b> divides the logits first: below 1 sharpens the distribution, above 1 flattens it;</li>
<li><b>top-k</b> keeps only the k most likely characters;</li>
<li><b>top-p</b> keeps the fewest most likely characters whose probabilities add up to p.</li></ul>
<p>What is left is scaled to add up to 1, and one random number picks the character.</p>
<div class="controls">
<label class="field">prompt <input id="letters-prompt" type="text" maxlength="128" spellcheck="false"></label>
<label class="field">temperature <input id="letters-temperature" type="range" min="0.05" max="2" step="0.05" value="1"><output></output></label>
<label class="field">top-k <input id="letters-topk" type="range" min="1" step="1"><output></output></label>
<label class="field">top-p <input id="letters-topp" type="range" min="0.05" max="1" step="0.05" value="1"><output></output></label>
</div>
<p id="letters-status" class="note"></p>
<div id="letters-bars" class="bars"></div>"""


def body_learning(d):
    return """<p>Training shows the kid a batch of text, measures how wrong its guesses were (the loss, in
nats per character), and nudges every number against its gradient. The curve is the real run's
log: the loss on training text and on held-out text. Move the slider to read what the kid wrote
from the same prompt with the same random numbers at each evaluation.</p>
<div id="loss-chart" class="chart"></div>
<label class="field">step <input id="learning-step" type="range" min="0" step="1"><output></output></label>
<pre id="learning-sample" class="sample"></pre>"""


def body_behind(d):
    return """<p>What this kid is, how it was trained and how we know the code is right.</p>
<h2>The run</h2><div id="run-table"></div>
<h2>Parity</h2>
<p>numpy_gpt is a reference with every gradient written by hand. <code>python -m parity</code> loads the
same weights into it and into the PyTorch version, runs both, and compares every activation,
gradient and optimizer step. The measure is the largest difference relative to the tensor's
largest entry.</p>
<div id="parity-table"></div>
<h2>Do it yourself</h2>
<pre class="code"><code>python3 -m venv .venv &amp;&amp; . .venv/bin/activate &amp;&amp; pip install -e ".[torch,plot,dev]"
python -m torch_gpt.train                       # train the kid: out/kid.npz and out/log.jsonl
python -m numpy_gpt.sample --prompt "ROMEO:"    # sample from it (torch_gpt.sample prints the same text)
python -m parity --checkpoint out/kid.npz --json out/parity.json
python -m peek show                             # what the kid learned, in a terminal
python -m peek build --parity out/parity.json   # this site, into site/
python -m peek serve                            # serve it at http://127.0.0.1:8000/</code></pre>"""


def body_playground(d):
    return """<p>The kid runs in this tab, in plain JavaScript, from the weights the other pages use. Nothing
is sent anywhere. It computes in float64, and with the same prompt, seed and settings it prints the
same text as <code>python -m numpy_gpt.sample --dtype float64</code> (the command is below). It uses
two of your cores: while the tab writes, a worker thread reads ahead, so that the kid is ready when
its window of context slides on.</p>
<div class="controls">
<label class="field wide">prompt <textarea id="play-prompt" rows="2" spellcheck="false"></textarea></label>
<label class="field">temperature <input id="play-temperature" type="number" min="0" max="5" step="0.05" value="0.8"></label>
<label class="field">top-k <input id="play-topk" type="number" min="1" step="1" placeholder="all"></label>
<label class="field">top-p <input id="play-topp" type="number" min="0.01" max="1" step="0.01" value="1"></label>
<label class="field">seed <input id="play-seed" type="number" min="0" step="1" value="1337"></label>
<label class="field">length <input id="play-length" type="number" min="1" max="10000" step="1" value="500"></label>
<div class="buttons"><button id="play-generate" type="button">generate</button>
<button id="play-stop" type="button" disabled>stop</button></div>
</div>
<p id="play-status" class="note"></p>
<pre id="play-output" class="sample"></pre>
<p class="note">The same text from a terminal: <code id="play-command"></code></p>
<div class="two"><div><h2>Next character</h2><div id="play-bars" class="bars"></div></div>
<div><h2>Attention of the newest character</h2><div id="play-attention" class="strips"></div></div></div>"""


BODIES = {"task": body_task, "vocabulary": body_vocabulary, "embeddings": body_embeddings,
          "positions": body_positions, "attention": body_attention, "block": body_block, "letters": body_letters,
          "learning": body_learning, "behind": body_behind, "playground": body_playground}
