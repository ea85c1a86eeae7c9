// The pages' code: draws each step from data/peek.json (peek.export) and runs the kid (kid.js) where a
// step is live. DOM and charts only; the model and the sampling rule live in kid.js and rng.js, and the
// worker that reads ahead for the playground in ahead.js.
import { load_weights, gpt_forward, generate, kept_tokens } from "./kid.js";
import { Lookahead, cached_run } from "./ahead.js";
import { default_rng } from "./rng.js";

const SVG = "http://www.w3.org/2000/svg";

// ------------------------------------------------------------------------------------------------
// small helpers

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

const $ = (id) => document.getElementById(id);

// a character as one visible glyph: newline and space would vanish (peek.analysis.show_char)
const show_char = (c) => ({ "\n": "⏎", " ": "␣", "\t": "⇥" })[c] ?? c;

const fmt = (x, digits = 3) => x.toFixed(digits);

function fail(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

async function fetch_ok(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);
  return response;
}

let kid_promise = null;
// the kid's weights, loaded once a page needs them: {config, chars, params, and the files: manifest, buffer}
function load_kid() {
  kid_promise ??= (async () => {
    const manifest = await (await fetch_ok("data/weights.json")).json();
    const buffer = await (await fetch_ok("data/" + manifest.file)).arrayBuffer();
    return { ...load_weights(manifest, buffer), manifest, buffer };
  })();
  return kid_promise;
}

// text -> ids, or an Error naming the characters the vocabulary lacks
function encode(text, chars) {
  const unknown = [...new Set([...text].filter((c) => !chars.includes(c)))].sort();
  if (unknown.length)
    throw new Error(`${unknown.length} character(s) not in the kid's vocabulary: ` +
                    unknown.map((c) => JSON.stringify(c)).join(", "));
  return [...text].map((c) => chars.indexOf(c));
}

// a promise that resolves in a new task: the tab can paint and take clicks, without setTimeout's 4 ms clamp
function next_task() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = resolve;
    channel.port2.postMessage(null);
  });
}

// softmax of a Float64Array
function softmax(logits) {
  let max = -Infinity;
  for (const z of logits) max = Math.max(max, z);
  const e = Array.from(logits, (z) => Math.exp(z - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

// a colour for v in [0, 1]: white to deep blue, as [r, g, b]
function shade_rgb(v) {
  const t = Math.max(0, Math.min(1, v));
  return [Math.round(255 - 215 * t), Math.round(255 - 165 * t), Math.round(255 - 75 * t)];
}

// the same colour as a CSS string
function shade(v) {
  return `rgb(${shade_rgb(v).join(",")})`;
}

// a colour for v in [-1, 1]: red, white, blue
function diverging(v) {
  const t = Math.max(-1, Math.min(1, v));
  return t >= 0 ? `rgb(${Math.round(255 - 200 * t)},${Math.round(255 - 140 * t)},255)`
                : `rgb(255,${Math.round(255 + 140 * t)},${Math.round(255 + 200 * t)})`;
}

// a bar chart: rows of [label, value in [0, 1], extra class]
function bars(container, rows) {
  container.replaceChildren(...rows.map(([label, value, cls]) =>
    el("div", { class: "bar " + (cls || "") },
       el("span", { class: "label", text: label }),
       el("span", { class: "track" }, el("span", { class: "fill", style: `width:${(100 * value).toFixed(1)}%` })),
       el("span", { class: "value", text: fmt(value) }))));
}

// a line chart in SVG: series [{name, points: [[x, y]], cls}]
function line_chart(container, series, x_label, y_label) {
  const W = 640, H = 300, pad = { l: 52, r: 12, t: 12, b: 40 };
  const xs = series.flatMap((s) => s.points.map((p) => p[0])), ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad.l + (W - pad.l - pad.r) * (x - x0) / ((x1 - x0) || 1);
  const sy = (y) => H - pad.b - (H - pad.t - pad.b) * (y - y0) / ((y1 - y0) || 1);
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, class: "linechart", role: "img" });
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    svg.append(el("svg:line", { x1: pad.l, x2: W - pad.r, y1: sy(y), y2: sy(y), class: "gridline" }),
               el("svg:text", { x: pad.l - 6, y: sy(y) + 4, class: "tick", "text-anchor": "end", text: fmt(y, 2) }));
  }
  for (const x of [x0, (x0 + x1) / 2, x1])
    svg.append(el("svg:text", { x: sx(x), y: H - pad.b + 16, class: "tick", "text-anchor": "middle", text: String(Math.round(x)) }));
  svg.append(el("svg:text", { x: (W + pad.l) / 2, y: H - 6, class: "axis", "text-anchor": "middle", text: x_label }),
             el("svg:text", { x: 12, y: H / 2, class: "axis", transform: `rotate(-90 12 ${H / 2})`, "text-anchor": "middle", text: y_label }));
  series.forEach((s, i) => {
    svg.append(el("svg:polyline", { points: s.points.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" "), class: `series s${i}` }));
    svg.append(el("svg:text", { x: W - pad.r - 4, y: pad.t + 14 + 16 * i, class: `legend s${i}`, "text-anchor": "end", text: s.name }));
  });
  container.replaceChildren(svg);
  return { svg, sx, sy };
}

// a (n, n) matrix on a canvas, one cell per entry; labels (n,), when given, go along the top and left
function heat(canvas, matrix, colour, labels = null) {
  const n = matrix.length, ctx = canvas.getContext("2d");
  const margin = labels ? 18 : 0, cell = (canvas.width - margin) / n;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      ctx.fillStyle = colour(matrix[i][j]);
      ctx.fillRect(margin + j * cell, margin + i * cell, Math.ceil(cell), Math.ceil(cell));
    }
  if (!labels) return;
  ctx.fillStyle = "#1d2330";
  ctx.font = `${Math.min(13, Math.max(7, cell * 0.8))}px monospace`;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  const every = Math.ceil(8 / cell);                     // skip labels that would overlap
  for (let t = 0; t < n; t += every) {
    ctx.fillText(labels[t], margin + (t + 0.5) * cell, margin / 2);
    ctx.fillText(labels[t], margin / 2, margin + (t + 0.5) * cell);
  }
}

function table(headers, rows) {
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((v) => el("td", { text: String(v) })))))));
}

// ------------------------------------------------------------------------------------------------
// the steps

// 1. the task: real text, coloured by the kid's surprise, with its top guesses
function task(d) {
  const view = d.passage ?? d.prompt, chars = d.vocab.chars;
  const worst = Math.log(chars.length) * 1.5;
  const spans = [...view.text].map((c, t) => {
    const loss = t > 0 ? view.losses[t - 1] : null;     // the surprise of seeing c after text[..t-1]
    const span = el("span", { class: "ch", text: c === "\n" ? "⏎\n" : c,
                              style: loss === null ? "" : `background:${shade(0.6 * loss / worst)}` });   // light enough to read
    span.addEventListener("mouseenter", () => guesses(t));
    return span;
  });
  $("passage").replaceChildren(...spans);
  function guesses(t) {
    spans.forEach((s, i) => s.classList.toggle("active", i === t));
    const before = view.text.slice(Math.max(0, t - 20), t);
    if (t === 0) {
      $("guesses").replaceChildren(el("p", { text: "The first character has nothing before it to guess from." }));
      return;
    }
    const top = view.top[t - 1], actual = view.ids[t];
    const p = view.probs[t - 1][actual];
    const rows = top.map(([j, q]) => [show_char(chars[j]), q, j === actual ? "hit" : ""]);
    const box = el("div");
    bars(box, rows);
    $("guesses").replaceChildren(
      el("p", {}, "After ", el("code", { text: JSON.stringify(before) }), " the kid's top guesses were:"), box,
      el("p", { text: `The real next character, ${JSON.stringify(view.text[t])}, got probability ${fmt(p)}: ` +
                      `a loss of ${fmt(view.losses[t - 1])} nats.` }));
  }
  guesses(Math.min(12, view.text.length - 1));
  const known = view.losses.filter((x) => x !== null);
  const mean = known.reduce((a, b) => a + b, 0) / known.length;
  $("passage-summary").textContent =
    `Mean loss over these ${known.length} guesses: ${fmt(mean)} nats per character. Guessing uniformly among ` +
    `${chars.length} characters would cost ln ${chars.length} = ${fmt(Math.log(chars.length))}.` +
    (d.passage ? "" : " (Built without the training text, so this is the sample prompt.)");
}

// 2. the vocabulary: ids, characters and counts
function vocabulary(d) {
  const { chars, counts, corpus } = d.vocab;
  const most = counts ? Math.max(...counts) : 1;
  $("vocab").replaceChildren(...[...chars].map((c, i) =>
    el("div", { class: "cell", title: counts ? `${counts[i].toLocaleString("en")} times` : "" },
       el("span", { class: "id", text: String(i) }), el("span", { class: "glyph", text: show_char(c) }),
       counts ? el("span", { class: "count" }, el("span", { style: `width:${(100 * Math.sqrt(counts[i] / most)).toFixed(1)}%` })) : "",
       counts ? el("span", { class: "n", text: counts[i].toLocaleString("en") }) : "")));
  $("vocab-summary").textContent = counts
    ? `${chars.length} characters, ${counts.reduce((a, b) => a + b, 0).toLocaleString("en")} in all in ${corpus}. ` +
      "Bar lengths are the square root of the count, so rare characters stay visible."
    : `${chars.length} characters. (This site was built without the training text, so there are no counts.)`;
}

// 3. embeddings: the PCA map, and each character's numbers on hover
function embeddings(d) {
  const chars = d.vocab.chars, xy = d.embedding.pca;
  const W = 520, H = 460, pad = 24;
  const xs = xy.map((p) => p[0]), ys = xy.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + (W - 2 * pad) * (x - x0) / ((x1 - x0) || 1);
  const sy = (y) => H - pad - (H - 2 * pad) * (y - y0) / ((y1 - y0) || 1);
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, class: "map", role: "img" });
  const labels = [...chars].map((c, i) => {
    const kind = /[A-Z]/.test(c) ? "upper" : /[a-z]/.test(c) ? "lower" : "other";
    const t = el("svg:text", { x: sx(xy[i][0]), y: sy(xy[i][1]), class: `char ${kind}`, "text-anchor": "middle",
                               "dominant-baseline": "central", tabindex: "0", text: show_char(c) });
    t.addEventListener("mouseenter", () => detail(i));
    t.addEventListener("focus", () => detail(i));
    return t;
  });
  svg.append(...labels);
  const [e0, e1] = d.embedding.explained;
  $("embedding-map").replaceChildren(svg, el("p", { class: "note",
    text: `Axes: the two principal directions, ${(100 * e0).toFixed(0)}% and ${(100 * e1).toFixed(0)}% of the ` +
          "variance. Upper case blue, lower case orange, the rest green." }));
  async function detail(i) {
    labels.forEach((t, j) => t.classList.toggle("active", j === i));
    const { params, config } = await load_kid();
    const C = config.n_embd, row = params["wte.weight"].subarray(i * C, (i + 1) * C);
    const strip = el("div", { class: "numbers" }, ...Array.from(row, (v) =>
      el("span", { style: `background:${diverging(v / 0.25)}`, title: v.toFixed(4) })));
    $("embedding-detail").replaceChildren(
      el("h2", { text: `${show_char(chars[i])} (id ${i})` }),
      el("p", { text: "Nearest by cosine similarity: " + d.embedding.neighbours[i]
        .map(([j, cos]) => `${show_char(chars[j])} ${fmt(cos, 2)}`).join(", ") }),
      el("p", { text: `Its ${C} numbers (red negative, blue positive):` }), strip,
      el("div", { class: "values" }, ...Array.from(row, (v) => el("span", { text: v.toFixed(3) }))));
  }
  detail(Math.max(0, chars.indexOf("e")));
}

// 4. positions: the similarity of every pair of position vectors
function positions(d) {
  const sim = d.positions.similarity, P = sim.length, canvas = $("position-map");
  heat(canvas, sim, diverging);
  canvas.addEventListener("mousemove", (event) => {
    const r = canvas.getBoundingClientRect();
    const j = Math.floor((event.clientX - r.left) / r.width * P), i = Math.floor((event.clientY - r.top) / r.height * P);
    if (i >= 0 && j >= 0 && i < P && j < P)
      $("position-detail").textContent = `positions ${i} and ${j}: cosine ${fmt(sim[i][j])}`;
  });
  $("position-detail").textContent = "Point at the map to read a pair. Red is -1, white 0, blue 1.";
  line_chart($("position-line"), [{ name: "cosine with the next position", points: d.positions.neighbours.map((v, t) => [t, v]) }],
             "position t", "cos(wpe[t], wpe[t+1])");
}

// 5. attention, live for the reader's prompt
async function attention(d) {
  const input = $("attention-prompt");
  input.value = d.prompt.text;
  const kid = await load_kid();
  const draw = () => {
    try {
      const text = input.value;
      if (!text) throw new Error("type at least one character");
      const ids = encode(text.slice(-kid.config.block_size), kid.chars);
      const { att } = gpt_forward(kid.params, kid.config, ids);
      const T = ids.length, labels = [...text.slice(-T)].map(show_char);
      $("attention-grid").replaceChildren(...att.flatMap((heads, l) => heads.map((a, h) => {
        const canvas = el("canvas", { width: 258, height: 258, class: "heat" });
        heat(canvas, Array.from({ length: T }, (_, i) => Array.from(a.subarray(i * T, (i + 1) * T))), shade, labels);
        return el("figure", {}, canvas, el("figcaption", { text: `layer ${l}, head ${h}` }));
      })));
      $("attention-status").textContent = `${T} positions: ${labels.join(" ")}. Row i, column j: how much ` +
        "position i attends to position j; the upper right is masked (the future).";
    } catch (e) {
      $("attention-status").textContent = e.message;
      $("attention-grid").replaceChildren();
    }
  };
  input.addEventListener("input", draw);
  draw();
}

// 6. the block: the real numbers of block 0
function block(d) {
  const rows = d.params.filter((r) => r.name.startsWith("h.0."))
    .map((r) => [r.name, r.shape.join(" x "), r.count.toLocaleString("en"), fmt(r.mean, 4), fmt(r.std, 4), fmt(r.norm, 3)]);
  $("block-params").replaceChildren(table(["tensor", "shape", "count", "mean", "std", "norm"], rows));
}

// every token's probability after the sampling rule (kid.kept_tokens), and before it (softmax / temperature)
function kept_distribution(logits, temperature, top_k, top_p) {
  const { order, cdf } = kept_tokens(logits, temperature, top_k, top_p);
  const before = softmax(Array.from(logits, (z) => z / temperature)), n = cdf.length;
  return order.map((id, r) => ({ id, p: r < n ? (cdf[r] - (r ? cdf[r - 1] : 0)) / cdf[n - 1] : 0, before: before[id] }));
}

// 7. back to letters: logits, softmax, temperature, top-k, top-p, live
async function letters(d) {
  const kid = await load_kid(), V = kid.config.vocab_size;
  const [prompt, temp, topk, topp] = ["letters-prompt", "letters-temperature", "letters-topk", "letters-topp"].map($);
  prompt.value = d.prompt.text;
  topk.max = V;
  topk.value = V;
  const draw = () => {
    for (const input of [temp, topk, topp]) input.nextElementSibling.value = input.value;
    try {
      if (!prompt.value) throw new Error("type at least one character");
      const ids = encode(prompt.value.slice(-kid.config.block_size), kid.chars);
      const { logits } = gpt_forward(kid.params, kid.config, ids);
      const last = logits.subarray((ids.length - 1) * V);
      const dist = kept_distribution(last, Number(temp.value), Number(topk.value), Number(topp.value));
      const kept = dist.filter((r) => r.p > 0).length;
      bars($("letters-bars"), dist.slice(0, 20).map((r) => r.p > 0 ? [show_char(kid.chars[r.id]), r.p]
                                                          : [show_char(kid.chars[r.id]), r.before, "cut"]));
      $("letters-status").textContent = `The 20 most likely next characters after ${JSON.stringify(prompt.value.slice(-20))}: ` +
        `${kept} of ${V} are kept, their probabilities scaled to add up to 1; the grey ones are cut (their bars show ` +
        `the probability they had before the cut). Top logit ${fmt(last[dist[0].id], 2)}.`;
    } catch (e) {
      $("letters-status").textContent = e.message;
      $("letters-bars").replaceChildren();
    }
  };
  for (const input of [prompt, temp, topk, topp]) input.addEventListener("input", draw);
  draw();
}

// 8. watch it learn: the loss curve and the sample at every evaluation
function learning(d) {
  const log = d.log;
  if (!log) {
    $("loss-chart").replaceChildren(el("p", { text: "This site was built without the run's log.jsonl, so there is no curve." }));
    $("learning-step").disabled = true;
    return;
  }
  const { svg, sx, sy } = line_chart($("loss-chart"), [
    { name: "train loss", points: log.map((e) => [e.step, e.train_loss]) },
    { name: "val loss", points: log.map((e) => [e.step, e.val_loss]) }], "step", "loss (nats per character)");
  const marker = el("svg:circle", { r: 5, class: "marker" });
  svg.append(marker);
  const slider = $("learning-step");
  slider.max = log.length - 1;
  slider.value = log.length - 1;
  const show = () => {
    const e = log[Number(slider.value)];
    slider.nextElementSibling.value = String(e.step);
    marker.setAttribute("cx", sx(e.step));
    marker.setAttribute("cy", sy(e.val_loss));
    $("learning-sample").textContent = `step ${e.step}: train loss ${fmt(e.train_loss, 4)}, val loss ${fmt(e.val_loss, 4)}\n\n` +
      (e.sample ?? "(no sample in this log)");
  };
  slider.addEventListener("input", show);
  show();
}

// 9. behind the scenes: the run and parity
async function behind(d) {
  const c = d.config, log = d.log, last = log?.[log.length - 1];
  const rows = [["checkpoint", d.checkpoint.file + (d.checkpoint.step !== null ? `, step ${d.checkpoint.step}` : "")],
                ["model", `${c.n_layer} layers, ${c.n_head} heads, ${c.n_embd} wide, ${c.block_size} characters of context`],
                ["vocabulary", `${c.vocab_size} characters`], ["parameters", d.n_params.toLocaleString("en")]];
  if (last) {
    rows.push(["evaluations", `${log.length}, every ${log.length > 1 ? log[1].step - log[0].step : "-"} steps`],
              ["final losses", `train ${fmt(last.train_loss, 4)}, val ${fmt(last.val_loss, 4)} at step ${last.step}`]);
    if (last.elapsed_s !== undefined) {
      const t = last.elapsed_s, took = t < 60 ? `${t.toFixed(1)} seconds` : `${(t / 60).toFixed(1)} minutes`;  // a short run, in seconds
      rows.push(["wall time", `${took}, evaluations included`]);
    }
    const lrs = log.filter((e) => e.lr !== undefined).map((e) => e.lr);
    if (lrs.length) rows.push(["learning rate", `peak ${Math.max(...lrs).toExponential(1)} (logged at each evaluation)`]);
    const rates = log.filter((e) => e.tokens_per_s).map((e) => e.tokens_per_s);
    if (rates.length) rows.push(["speed", `${Math.round(rates.reduce((a, b) => a + b, 0) / rates.length).toLocaleString("en")} tokens/s on average`]);
  }
  $("run-table").replaceChildren(table(["", ""], rows));
  if (document.body.dataset.parity !== "yes") {
    $("parity-table").replaceChildren(el("p", { class: "note", text: "This site was built without a parity summary: " +
      "run python -m parity --checkpoint out/kid.npz --json out/parity.json, then peek build --parity out/parity.json." }));
    return;
  }
  const parity = await (await fetch_ok("data/parity.json")).json();
  $("parity-table").replaceChildren(el("p", { text: `${parity.dtype}, weights from ${parity.weights}: ${parity.ok ? "PASS" : "FAIL"}` }),
    table(["section", "tensors", "worst max rel", "tensor", "tolerance"],
          parity.sections.map((s) => [s.section, s.tensors, s.max_rel.toExponential(2), s.worst, s.tol.toExponential(0)])));
}

// 10. the playground: the kid writes in this tab
async function playground(d) {
  const kid = await load_kid(), { config, chars } = kid, V = config.vocab_size;
  const inputs = Object.fromEntries(["prompt", "temperature", "topk", "topp", "seed", "length"].map((k) => [k, $("play-" + k)]));
  inputs.prompt.value = d.prompt.text;
  inputs.topk.max = V;
  let running = null, ahead = null;
  try {
    ahead = new Lookahead(kid.manifest, kid.buffer);   // the second core primes each next window
  } catch (e) {
    console.warn(`the playground runs on one core: no worker (${e.message})`);
  }
  const settings = () => {
    const s = { prompt: inputs.prompt.value, temperature: Number(inputs.temperature.value),
                top_k: inputs.topk.value === "" ? null : Number(inputs.topk.value), top_p: Number(inputs.topp.value),
                seed: Number(inputs.seed.value), length: Number(inputs.length.value) };
    if (!(s.temperature >= 0)) throw new Error("temperature must be 0 (greedy) or more");
    if (s.top_k !== null && !(Number.isInteger(s.top_k) && s.top_k >= 1 && s.top_k <= V)) throw new Error(`top-k must be 1 to ${V}, or empty for all`);
    if (!(s.top_p > 0 && s.top_p <= 1)) throw new Error("top-p must be in (0, 1]");
    if (!(Number.isSafeInteger(s.seed) && s.seed >= 0)) throw new Error("the seed must be a whole number, 0 or more");
    if (!(Number.isInteger(s.length) && s.length >= 1)) throw new Error("the length must be a whole number, 1 or more");
    return s;
  };
  const command = () => {
    try {
      const s = settings();
      $("play-command").textContent = `python -m numpy_gpt.sample --dtype float64 --prompt ${JSON.stringify(s.prompt)} --seed ${s.seed} ` +
        `--temperature ${s.temperature}${s.top_k === null ? "" : ` --top-k ${s.top_k}`} --top-p ${s.top_p} --max-new-tokens ${s.length}`;
      $("play-status").textContent = "";
    } catch (e) {
      $("play-status").textContent = e.message;
    }
  };
  for (const input of Object.values(inputs)) input.addEventListener("input", command);
  command();

  const strips = [];                                  // one canvas a head, a pixel a position of the window
  const show_step = (logits, att) => {
    const probs = softmax(logits), order = probs.map((_, i) => i).sort((i, j) => probs[j] - probs[i] || i - j);
    bars($("play-bars"), order.slice(0, 10).map((i) => [show_char(chars[i]), probs[i]]));
    if (!strips.length)
      $("play-attention").replaceChildren(...att.flatMap((heads, l) => heads.map((_, h) => {
        const canvas = el("canvas", { width: config.block_size, height: 1, class: "cells" });
        strips.push(canvas);
        return el("div", { class: "strip" }, el("span", { class: "label", text: `L${l} H${h}` }), canvas);
      })), el("p", { class: "note", text: "Each row: one head's weights over the window, the oldest character " +
                                          "on the left, the newest on the right; darker is more." }));
    att.flat().forEach((a, k) => {                    // one pixel a position, written as RGBA bytes
      const pixels = new ImageData(config.block_size, 1);                 // transparent past the window
      for (let j = 0; j < a.length; j++) pixels.data.set([...shade_rgb(a[j]), 255], 4 * j);
      strips[k].getContext("2d").putImageData(pixels, 0, 0);
    });
  };

  async function run() {
    let s;
    try {
      s = settings();
    } catch (e) {
      $("play-status").textContent = e.message;
      return;
    }
    let ids;
    try {
      ids = s.prompt === "" ? encode("\n", chars) : encode(s.prompt, chars);   // numpy_gpt.sample's rule
    } catch (e) {
      $("play-status").textContent = "The prompt has " + e.message;
      return;
    }
    const model = cached_run(kid, ahead), rng = default_rng(s.seed);
    const out = $("play-output");
    out.textContent = s.prompt;
    delete out.dataset.done;
    const stream = generate(model.prefill, model.decode, ids, s.length, config.block_size, rng, s.temperature, s.top_k, s.top_p);
    running = { stop: false };
    const me = running;
    $("play-generate").disabled = true;
    $("play-stop").disabled = false;
    const start = performance.now();
    let made = 0, pending = "", step = null, latest = null, shown = -Infinity;
    while (!me.stop) {
      // write for two frames' worth of time (33 ms), then show it and hand the tab back to the browser.
      // Each hand-back costs the tab a render of the page: every 16 ms, that took about a quarter of the
      // writing's time in the tab
      for (const frame_end = performance.now() + 33; performance.now() < frame_end; ) {
        const wait = model.before_next();
        if (wait) await wait;
        step = stream.next();
        if (step.done) break;
        pending += chars[step.value.token];
        latest = step.value;
        made++;
      }
      out.textContent += pending;
      pending = "";
      if (step.done) break;
      // the bars and strips change ten times a second: faster is a blur to the eye, and drawing them
      // every frame took time from the writing
      if (performance.now() - shown >= 100) {
        show_step(latest.logits, latest.att);
        shown = performance.now();
      }
      $("play-status").textContent = `${made} of ${s.length} characters`;
      await next_task();
    }
    out.textContent += pending;
    const seconds = (performance.now() - start) / 1000;
    if (latest) show_step(latest.logits, latest.att);    // the step the last character was drawn from
    $("play-status").textContent = `${made} characters in ${seconds.toFixed(2)} s (${Math.round(made / seconds)} characters/s)` +
      (me.stop ? ", stopped" : "");
    out.dataset.charsPerSecond = String(made / seconds);
    out.dataset.windows = `${model.windows.ahead} of ${model.windows.primed}`;   // primed with the worker's help
    out.dataset.done = me.stop ? "stopped" : "yes";
    $("play-generate").disabled = false;
    $("play-stop").disabled = true;
    running = null;
  }
  $("play-generate").addEventListener("click", run);
  $("play-stop").addEventListener("click", () => { if (running) running.stop = true; });
}

// ------------------------------------------------------------------------------------------------

const STEPS = [null, task, vocabulary, embeddings, positions, attention, block, letters, learning, behind, playground];

async function main() {
  const step = Number(document.body.dataset.step);
  if (!step) return;
  const data = await (await fetch_ok("data/peek.json")).json();
  await STEPS[step](data);
  document.body.dataset.ready = "yes";
}

main().catch((e) => {
  fail(`Something went wrong: ${e.message}`);
  console.error(e);
});
