// The pages' code: draws each step's figures from data/peek.json (peek.export) and runs the kid (kid.js)
// where a step is live. DOM and charts only; the model and the sampling rule live in kid.js and rng.js,
// the worker that reads ahead for the playground in ahead.js, and the calculator's arithmetic in calc.js.
// The prose around the figures is in peek/templates/, filled at build time.
import {
  load_weights, gpt_forward, generate, kept_tokens,
  embedding_forward, layernorm_forward, linear_forward, attention_forward, gelu_forward, residual_forward,
} from "./kid.js";
import { Lookahead, cached_run } from "./ahead.js";
import { default_rng } from "./rng.js";
import { $, el, fail, fetch_ok } from "./dom.js";

const SEED_MAX = 4294967295;            // numpy_gpt.machinery.cli.SEED_MAX
const LENGTH_MAX = 10000;               // the playground's own limit; the CLI writes more

// ------------------------------------------------------------------------------------------------
// small helpers

// a character as one visible glyph: newline and space would vanish (peek.analysis.show_char)
const show_char = (c) => ({ "\n": "⏎", " ": "␣", "\t": "⇥" })[c] ?? c;

// text in quotes, a newline drawn as ⏎
const quoted = (text) => `“${text.replace(/\n/g, "⏎")}”`;

const fmt = (x, digits = 3) => (Math.abs(x) < 0.5 * 10 ** -digits ? 0 : x).toFixed(digits);   // no "-0.000"
const pct = (x, digits = 0) => `${(100 * x).toFixed(digits)}%`;
const thousands = (x) => Math.round(x).toLocaleString("en");

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

// a colour for v in [0, 1]: paper white to deep blue, as [r, g, b]
function shade_rgb(v) {
  const t = Math.max(0, Math.min(1, v));
  return [Math.round(252 - 212 * t), Math.round(251 - 161 * t), Math.round(248 - 78 * t)];
}

// the same colour as a CSS string
function shade(v) {
  return `rgb(${shade_rgb(v).join(",")})`;
}

// a colour for v in [-1, 1]: orange, white, blue
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

// draw(width) now and again whenever the container's width changes: every SVG chart is drawn at the
// width it is shown at, one user unit a CSS pixel, so that its text keeps its size on a phone
function responsive(container, draw) {
  let last = -1;
  const redraw = () => {
    const width = Math.round(container.clientWidth);
    if (width === last || width === 0) return;
    last = width;
    draw(width);
  };
  new ResizeObserver(redraw).observe(container);
  redraw();
  return () => { last = -1; redraw(); };
}

// a line chart in SVG, width CSS pixels wide: series [{name, points: [[x, y]]}] -> {svg, sx, sy}
function line_chart(container, width, series, x_label, y_label) {
  const W = Math.max(260, width), H = Math.round(Math.min(340, Math.max(240, W * 0.5)));
  const pad = { l: 54, r: 18, t: 14 + 18 * series.length, b: 46 };      // the legend above the plot
  const xs = series.flatMap((s) => s.points.map((p) => p[0])), ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad.l + (W - pad.l - pad.r) * (x - x0) / ((x1 - x0) || 1);
  const sy = (y) => H - pad.b - (H - pad.t - pad.b) * (y - y0) / ((y1 - y0) || 1);
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "linechart", role: "img" });
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    svg.append(el("svg:line", { x1: pad.l, x2: W - pad.r, y1: sy(y), y2: sy(y), class: "gridline" }),
               el("svg:text", { x: pad.l - 6, y: sy(y) + 4, class: "tick", "text-anchor": "end", text: fmt(y, 2) }));
  }
  // the first tick starts at its mark and the last ends at it, so that neither is cut off at the edge
  [[x0, "start"], [(x0 + x1) / 2, "middle"], [x1, "end"]].forEach(([x, anchor]) =>
    svg.append(el("svg:text", { x: sx(x), y: H - pad.b + 18, class: "tick", "text-anchor": anchor,
                                text: Math.round(x).toLocaleString("en") })));
  svg.append(el("svg:text", { x: (W + pad.l) / 2, y: H - 8, class: "axis", "text-anchor": "middle", text: x_label }),
             el("svg:text", { x: 14, y: (H - pad.b) / 2, class: "axis", transform: `rotate(-90 14 ${(H - pad.b) / 2})`,
                              "text-anchor": "middle", text: y_label }));
  series.forEach((s, i) => {
    svg.append(el("svg:polyline", { points: s.points.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" "), class: `series s${i}` }));
    svg.append(el("svg:text", { x: W - pad.r, y: 14 + 18 * i, class: `legend s${i}`, "text-anchor": "end", text: s.name }));
  });
  container.replaceChildren(svg);
  return { svg, sx, sy };
}

// a (n, n) matrix on a canvas, one pixel per entry: the browser scales it up (image-rendering: pixelated)
function heat_pixels(canvas, matrix, rgb) {
  const n = matrix.length;
  canvas.width = n;
  canvas.height = n;
  const pixels = new ImageData(n, n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) pixels.data.set([...rgb(matrix[i][j]), 255], 4 * (i * n + j));
  canvas.getContext("2d").putImageData(pixels, 0, 0);
}

// the diverging colour as [r, g, b], for heat_pixels
const diverging_rgb = (v) => diverging(v).match(/\d+/g).map(Number);

// an attention map large enough to read: an SVG of (T, T) squares with the characters along both
// sides; pointing at (or tapping) a square writes its weight into readout
function attention_map(container, width, a, labels, readout, caption) {
  const T = labels.length, margin = 20, side = Math.min(width - margin - 4, 30 * T + 2, 560);
  const cell = side / T, W = margin + side + 2;
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${W}`, width: W, height: W, class: "attmap", role: "img",
                              "aria-label": caption });
  const g = el("svg:g", { transform: `translate(${margin},${margin})` });
  for (let i = 0; i < T; i++)
    for (let j = 0; j < T; j++)                      // j > i: the future, masked
      g.append(el("svg:rect", { x: j * cell, y: i * cell, width: cell + 0.3, height: cell + 0.3,
                                fill: j > i ? "#f3f0ea" : shade(Math.sqrt(a[i * T + j])) }));
  const every = Math.max(1, Math.ceil(13 / cell));      // skip labels that would overlap
  for (let t = 0; t < T; t += every) {
    svg.append(el("svg:text", { x: margin + (t + 0.5) * cell, y: 14, class: "axis-char", "text-anchor": "middle", text: labels[t] }),
               el("svg:text", { x: 10, y: margin + (t + 0.5) * cell + 4, class: "axis-char", "text-anchor": "middle", text: labels[t] }));
  }
  svg.append(g);
  const point = (event) => {
    const r = g.getBoundingClientRect();
    const j = Math.floor((event.clientX - r.left) / r.width * T), i = Math.floor((event.clientY - r.top) / r.height * T);
    if (!(i >= 0 && j >= 0 && i < T && j < T)) return;
    if (j > i) {
      readout.textContent = `Position ${i} ("${labels[i]}") may not look at position ${j}: it is in its future.`;
      return;
    }
    readout.textContent = `Position ${i} ("${labels[i]}") looks at position ${j} ("${labels[j]}") with weight ` +
      `${fmt(a[i * T + j])}: ${pct(a[i * T + j])} of its attention.`;
  };
  svg.addEventListener("pointermove", point);
  svg.addEventListener("pointerdown", point);
  container.replaceChildren(svg);
}

function table(headers, rows) {
  return el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((v) => el("td", { text: String(v) })))))));
}

// a head's clearest habit in words (peek.habits.describe)
function describe_habit(h) {
  if (!h) return "";
  if (h.habit === "spread" || h.habit === "near") return `${h.label}, ${h.mean_distance.toFixed(1)} characters back on average`;
  return `${h.label}, ${pct(h.figure)} of its weight`;
}

// the same in a few words, for a small map's caption: "previous character, 83%"
function short_habit(h) {
  if (!h) return "";
  if (h.habit === "spread") return `spread out, ${h.mean_distance.toFixed(1)} back`;
  if (h.habit === "near") return `the last few, ${h.mean_distance.toFixed(1)} back`;
  return `${h.label.replace(/^looks at (the )?/, "")}, ${pct(h.figure)}`;
}

// the export's head habits as habits[l][h], or null (peek.habits.head_habits)
function habits_of(d) {
  const h = d.habits && !Array.isArray(d.habits) ? d.habits.heads : d.habits;
  return Array.isArray(h) && h.length ? h : null;
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
    span.addEventListener("click", () => guesses(t));
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
      el("p", {}, "After ", el("code", { text: quoted(before) }), " the kid's top guesses were:"), box,
      el("p", { text: `The real next character, “${show_char(view.text[t])}”, got probability ${fmt(p)}: ` +
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

// a scatter of the characters on two axes, width CSS pixels wide -> the labels, in id order
function char_map(container, width, chars, xy, on_point = null, compact = false) {
  const W = Math.max(240, width), H = Math.round(Math.min(compact ? 340 : 460, W * 0.82)), pad = 18;
  const xs = xy.map((p) => p[0]), ys = xy.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + (W - 2 * pad) * (x - x0) / ((x1 - x0) || 1);
  const sy = (y) => H - pad - (H - 2 * pad) * (y - y0) / ((y1 - y0) || 1);
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "map", role: "img" });
  svg.append(el("svg:line", { x1: pad, x2: W - pad, y1: sy(0), y2: sy(0), class: "axisline" }),
             el("svg:line", { x1: sx(0), x2: sx(0), y1: pad, y2: H - pad, class: "axisline" }));
  const labels = [...chars].map((c, i) => {
    const kind = /[A-Z]/.test(c) ? "upper" : /[a-z]/.test(c) ? "lower" : "other";
    const t = el("svg:text", { x: sx(xy[i][0]), y: sy(xy[i][1]), class: `char ${kind}`, "text-anchor": "middle",
                               "dominant-baseline": "central", tabindex: on_point ? "0" : null, text: show_char(c) });
    if (on_point) {
      t.addEventListener("mouseenter", () => on_point(i));
      t.addEventListener("focus", () => on_point(i));
      t.addEventListener("click", () => on_point(i));
    }
    return t;
  });
  svg.append(...labels);
  container.replaceChildren(svg);
  return labels;
}

// 3. embeddings: the PCA map, and each character's numbers on hover
function embeddings(d) {
  const chars = d.vocab.chars, xy = d.embedding.pca, box = el("div");
  let labels = [], current = Math.max(0, chars.indexOf("e"));
  const [e0, e1] = d.embedding.explained;
  $("embedding-map").replaceChildren(box, el("p", { class: "note",
    text: `Across: the first principal direction (${pct(e0)} of the variance). Up: the second (${pct(e1)}). ` +
          "Capitals blue, small letters orange, the rest green." }));
  responsive(box, (width) => {
    labels = char_map(box, width, chars, xy, detail);
    labels[current]?.classList.add("active");
  });
  async function detail(i) {
    current = i;
    labels.forEach((t, j) => t.classList.toggle("active", j === i));
    const { params, config } = await load_kid();
    const C = config.n_embd, row = params["wte.weight"].subarray(i * C, (i + 1) * C);
    const strip = el("div", { class: "numbers" }, ...Array.from(row, (v) =>
      el("span", { style: `background:${diverging(v / 0.25)}`, title: v.toFixed(4) })));
    $("embedding-detail").replaceChildren(
      el("h2", { text: `${show_char(chars[i])} (id ${i})` }),
      el("p", { text: "Nearest in all its numbers, by cosine similarity: " + d.embedding.neighbours[i]
        .map(([j, cos]) => `${show_char(chars[j])} ${fmt(cos, 2)}`).join(", ") }),
      el("p", { text: `Its ${C} numbers (orange negative, blue positive):` }), strip,
      el("div", { class: "values" }, ...Array.from(row, (v) => el("span", { text: v.toFixed(3) }))));
  }
  detail(current);
}

// 4. positions: the similarity of every pair of position vectors
function positions(d) {
  const sim = d.positions.similarity, P = sim.length, canvas = $("position-map");
  heat_pixels(canvas, sim, diverging_rgb);
  const read = (event) => {
    const r = canvas.getBoundingClientRect();
    const j = Math.floor((event.clientX - r.left) / r.width * P), i = Math.floor((event.clientY - r.top) / r.height * P);
    if (i >= 0 && j >= 0 && i < P && j < P)
      $("position-detail").textContent = `Positions ${i} and ${j}: cosine ${fmt(sim[i][j])}.`;
  };
  canvas.addEventListener("pointermove", read);
  canvas.addEventListener("pointerdown", read);
  $("position-detail").textContent = "Point at the map (or tap it) to read a pair of positions.";
  responsive($("position-line"), (width) => line_chart($("position-line"), width,
    [{ name: "cosine with the next position", points: d.positions.neighbours.map((v, t) => [t, v]) }],
    "position t", "cosine of t with t + 1"));
}

// 5. attention, live for the reader's prompt: a map per head, layers down, heads across, each labelled
// with its habit; one map large, with its characters, to read the weights
async function attention(d) {
  const input = $("attention-prompt"), habits = habits_of(d);
  // a short piece of held-out text, ended at a space: short enough that every character is labelled
  const start = d.passage ? d.passage.text.slice(0, 28) : d.prompt.text, space = start.lastIndexOf(" ");
  input.value = space > 12 ? start.slice(0, space) : start;
  const kid = await load_kid(), { n_layer: L, n_head: H } = kid.config;
  let chosen = [0, Math.min(1, H - 1)], state = null;
  const focus = $("attention-focus");
  const focus_box = el("div", { class: "focus-map" }), readout = el("p", { class: "readout note" });
  const title = el("h2");
  focus.replaceChildren(title, focus_box, readout);
  const redraw_focus = responsive(focus_box, (width) => {
    if (!state) return;
    const [l, h] = chosen;
    attention_map(focus_box, width, state.att[l][h], state.labels, readout, `layer ${l}, head ${h}`);
  });
  const show_focus = () => {
    const [l, h] = chosen;
    title.textContent = `Layer ${l}, head ${h}` + (habits ? `: ${describe_habit(habits[l]?.[h])}` : "");
    readout.textContent = "Point at a square (or tap it) to read its weight.";
    document.querySelectorAll("#attention-grid .head").forEach((b) =>
      b.classList.toggle("chosen", b.dataset.l === String(l) && b.dataset.h === String(h)));
    redraw_focus();
  };
  const draw = () => {
    try {
      const text = input.value;
      if (!text) throw new Error("Type at least one character.");
      const ids = encode(text.slice(-kid.config.block_size), kid.chars);
      const { att } = gpt_forward(kid.params, kid.config, ids);
      const T = ids.length, labels = [...text.slice(-T)].map(show_char);
      state = { att, labels };
      const cells = [el("span"), ...Array.from({ length: H }, (_, h) => el("span", { class: "col-head", text: `head ${h}` }))];
      for (let l = 0; l < L; l++) {
        cells.push(el("span", { class: "row-head", text: `layer ${l}` }));
        for (let h = 0; h < H; h++) {
          const canvas = el("canvas", { class: "heat" });
          const a = att[l][h];
          heat_pixels(canvas, Array.from({ length: T }, (_, i) => Array.from(a.subarray(i * T, (i + 1) * T))),
                      (v) => shade_rgb(Math.sqrt(v)));
          const habit = habits?.[l]?.[h];
          const name = `layer ${l}, head ${h}` + (habit ? `: ${describe_habit(habit)}` : "");
          cells.push(el("button", { type: "button", class: "head", "data-l": l, "data-h": h, "aria-label": name, title: name,
                                    onclick: () => { chosen = [l, h]; show_focus(); } },
                        canvas, el("span", { class: "habit", text: short_habit(habit) })));
        }
      }
      const grid = $("attention-grid");
      grid.style.setProperty("--heads", H);
      grid.replaceChildren(...cells);
      $("attention-status").textContent = `${T} positions: ${labels.join(" ")}. Squares are darker where the weight ` +
        "is larger; the empty upper right is the future, which no position may see.";
      show_focus();
    } catch (e) {
      $("attention-status").textContent = e.message;
      $("attention-grid").replaceChildren();
      state = null;
      focus_box.replaceChildren();
    }
  };
  input.addEventListener("input", draw);
  draw();
}

// every intermediate of one forward pass (kid.js's layers, in gpt_forward's order), for step 6
function trace(params, config, ids) {
  const { n_layer: L, n_head: H, n_embd: C, vocab_size: V } = config, T = ids.length;
  const out = { T, embed: embedding_forward(ids, params["wte.weight"], params["wpe.weight"], C), blocks: [] };
  let x = out.embed;
  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`, b = {};
    b.ln_1 = layernorm_forward(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"]);
    const qkv = linear_forward(b.ln_1, params[p + "attn.c_attn.weight"], params[p + "attn.c_attn.bias"], 3 * C);
    const attn = attention_forward(qkv, H, T);
    b.att = attn.att;
    b.attn = linear_forward(attn.y, params[p + "attn.c_proj.weight"], params[p + "attn.c_proj.bias"], C);
    b.add_1 = x = residual_forward(x, b.attn);
    b.ln_2 = layernorm_forward(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"]);
    b.hidden = gelu_forward(linear_forward(b.ln_2, params[p + "mlp.c_fc.weight"], params[p + "mlp.c_fc.bias"], 4 * C));
    b.mlp = linear_forward(b.hidden, params[p + "mlp.c_proj.weight"], params[p + "mlp.c_proj.bias"], C);
    b.add_2 = x = residual_forward(x, b.mlp);
    out.blocks.push(b);
  }
  out.ln_f = layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"]);
  out.logits = linear_forward(out.ln_f, params["lm_head.weight"], null, V);
  out.probs = softmax(out.logits.subarray((T - 1) * V));
  return out;
}

// the last row of a (T, n) tensor as a strip of colours and four numbers
function numbers_row(name, tensor, T) {
  const n = tensor.length / T, row = Array.from(tensor.subarray((T - 1) * n));
  const mean = row.reduce((a, b) => a + b, 0) / n;
  const spread = Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / n);
  const big = Math.max(...row.map(Math.abs)) || 1;
  return el("div", { class: "tensor" },
    el("p", {}, el("b", { text: name }), ` (T, ${n}) = (${T}, ${n}); the last position's ${n} numbers:`),
    el("div", { class: "numbers", style: `grid-template-columns: repeat(${Math.min(n, 64)}, 1fr)` },
       ...row.map((v) => el("span", { style: `background:${diverging(v / big)}`, title: v.toFixed(4) }))),
    el("p", { class: "note", text: `mean ${fmt(mean)}, spread ${fmt(spread)}, smallest ${fmt(Math.min(...row))}, ` +
                                   `largest ${fmt(Math.max(...row))} (orange negative, blue positive, scaled to the largest size)` }));
}

// 6. the block: the diagram, each part's code and its numbers for the prompt
async function block(d) {
  const rows = d.params.filter((r) => r.name.startsWith("h.0."))
    .map((r) => [r.name, r.shape.join(" × "), r.count.toLocaleString("en"), fmt(r.mean, 4), fmt(r.std, 4), fmt(r.norm, 3)]);
  $("block-params").replaceChildren(table(["tensor", "shape", "numbers", "mean", "spread", "size (norm)"], rows));
  const kid = await load_kid(), { chars, config } = kid;
  const input = $("block-prompt"), layer = $("block-layer");
  input.value = d.prompt.text;
  let part = "attn", run = null;
  const sections = [...document.querySelectorAll(".part-code")];
  const show_numbers = () => {
    const section = sections.find((s) => s.dataset.part === part), box = section.querySelector(".part-numbers");
    if (!run) {
      box.replaceChildren();
      return;
    }
    const l = Number(layer.value), b = run.blocks[l], T = run.T, where = `in block ${l}`;
    const content = {
      chars: () => [el("p", {}, "ids: ", el("code", { text: run.ids.join(" ") }))],
      embed: () => [numbers_row("wte[id] + wpe[t]", run.embed, T)],
      ln: () => [numbers_row(`the first LayerNorm ${where}`, b.ln_1, T), numbers_row(`the second LayerNorm ${where}`, b.ln_2, T)],
      attn: () => [numbers_row(`attention's output ${where}`, b.attn, T),
                   el("p", { class: "note", text: `The last position's weights, head 0: ` +
                     Array.from(b.att.subarray((T - 1) * T, T * T), (w, j) => `${show_char(run.text[j])} ${fmt(w, 2)}`).join(", ") })],
      add: () => [numbers_row(`the stream after attention's add ${where}`, b.add_1, T), numbers_row(`the stream after the MLP's add ${where}`, b.add_2, T)],
      mlp: () => [numbers_row(`the MLP's widened, bent middle ${where}`, b.hidden, T), numbers_row(`the MLP's output ${where}`, b.mlp, T)],
      lnf: () => [numbers_row("the final LayerNorm", run.ln_f, T)],
      head: () => [numbers_row("the logits, one score per character", run.logits, T)],
      softmax: () => {
        const order = run.probs.map((_, i) => i).sort((i, j) => run.probs[j] - run.probs[i]).slice(0, 8);
        const bar_box = el("div", { class: "bars" });
        bars(bar_box, order.map((i) => [show_char(chars[i]), run.probs[i]]));
        return [el("p", { text: `After ${quoted(run.text)}, the likeliest next characters:` }), bar_box];
      },
    }[part]();
    box.replaceChildren(...content);
  };
  const select = (name) => {
    part = name;
    sections.forEach((s) => { s.hidden = s.dataset.part !== name; });
    document.querySelectorAll("#block-diagram .part").forEach((g) => g.classList.toggle("chosen", g.dataset.part === name));
    show_numbers();
  };
  const pick = (name) => {
    select(name);
    if (window.innerWidth < 760)                       // on a phone the code is below the diagram: go there
      sections.find((s) => s.dataset.part === name).scrollIntoView({ behavior: "smooth", block: "start" });
  };
  document.querySelectorAll("#block-diagram .part").forEach((g) => {
    g.addEventListener("click", () => pick(g.dataset.part));
    g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pick(g.dataset.part); } });
  });
  const compute = () => {
    try {
      if (!input.value) throw new Error("Type at least one character.");
      const text = input.value.slice(-config.block_size), ids = encode(text, chars);
      run = { ...trace(kid.params, config, ids), ids, text };
    } catch (e) {
      run = null;
      sections.forEach((s) => s.querySelector(".part-numbers").replaceChildren(el("p", { class: "note", text: e.message })));
      return;
    }
    show_numbers();
  };
  input.addEventListener("input", compute);
  layer.addEventListener("change", show_numbers);
  compute();
  select(part);
}

// every token's probability after the sampling rule (kid.kept_tokens), and before it (softmax / temperature);
// temperature 0 is greedy: all of it on the first maximum
function kept_distribution(logits, temperature, top_k, top_p) {
  if (temperature === 0) {
    const raw = softmax(logits);
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return raw.map((p, id) => ({ id, p: id === best ? 1 : 0, before: p })).sort((a, b) => b.before - a.before || a.id - b.id);
  }
  const { order, cdf } = kept_tokens(logits, temperature, top_k, top_p);
  const before = softmax(Array.from(logits, (z) => z / temperature)), n = cdf.length;
  return order.map((id, r) => ({ id, p: r < n ? (cdf[r] - (r ? cdf[r - 1] : 0)) / cdf[n - 1] : 0, before: before[id] }));
}

// a slider's <output>: its value, as the reader reads it
function show_value(input, text = null) {
  input.nextElementSibling.value = text ?? input.value;
}

// 7. back to letters: logits, softmax, temperature, top-k, top-p, live
async function letters(d) {
  const kid = await load_kid(), V = kid.config.vocab_size;
  const [prompt, temp, topk, topp] = ["letters-prompt", "letters-temperature", "letters-topk", "letters-topp"].map($);
  if (!prompt.value) prompt.value = d.prompt.text;
  topk.max = V;
  topk.value = V;
  const draw = () => {
    show_value(temp);
    show_value(topk, Number(topk.value) >= V ? `${V} (all)` : topk.value);
    show_value(topp, Number(topp.value) >= 1 ? "1 (all)" : topp.value);
    try {
      if (!prompt.value) throw new Error("Type at least one character.");
      const ids = encode(prompt.value.slice(-kid.config.block_size), kid.chars);
      const { logits } = gpt_forward(kid.params, kid.config, ids);
      const last = logits.subarray((ids.length - 1) * V);
      const dist = kept_distribution(last, Number(temp.value), Number(topk.value), Number(topp.value));
      const kept = dist.filter((r) => r.p > 0).length;
      bars($("letters-bars"), dist.slice(0, 20).map((r) => r.p > 0 ? [show_char(kid.chars[r.id]), r.p]
                                                          : [show_char(kid.chars[r.id]), r.before, "cut"]));
      $("letters-status").textContent = `The 20 likeliest next characters after ${quoted((prompt.value.length > 20 ? "…" : "") + prompt.value.slice(-20))}. ` +
        `${kept} of ${V} can be drawn, their probabilities rescaled to add up to 1. Grey ones are cut: their bars ` +
        "show the probability they had before the cut.";
    } catch (e) {
      $("letters-status").textContent = e.message;
      $("letters-bars").replaceChildren();
    }
  };
  for (const input of [prompt, temp, topk, topp]) input.addEventListener("input", draw);
  draw();
}

// the export's snapshots (peek.snapshots) as a list, oldest first, or []
function snapshots_of(d) {
  const s = d.snapshots;
  if (!s) return [];
  return s.snapshots ?? [];
}

// 8. watch it learn: the loss curve, the samples, and the snapshots of the kid's insides, on one slider
function learning(d) {
  const log = d.log, snaps = snapshots_of(d), slider = $("learning-step");
  if (!log && !snaps.length) {
    $("loss-chart").replaceChildren(el("p", { text: "This site was built without the run's log.jsonl, so there is no curve." }));
    slider.disabled = true;
    return;
  }
  // the slider's stops: every evaluation in the log, else every snapshot
  const stops = log ? log.map((e) => e.step) : snaps.map((s) => s.step);
  slider.max = stops.length - 1;
  slider.value = stops.length - 1;
  let chart = null;
  const chart_box = $("loss-chart"), view = snapshot_view(d, snaps);
  if (log)
    responsive(chart_box, (width) => {
      chart = line_chart(chart_box, width, [
        { name: "train loss", points: log.map((e) => [e.step, e.train_loss]) },
        { name: "held-out loss", points: log.map((e) => [e.step, e.val_loss]) }], "step", "loss (nats per character)");
      chart.marker = el("svg:circle", { r: 6, class: "marker" });
      chart.svg.append(chart.marker);
      show();
    });
  else chart_box.replaceChildren(el("p", { class: "note", text: "This site was built without the run's log.jsonl, so there is no curve." }));
  function show() {
    const i = Number(slider.value), step = stops[i];
    show_value(slider, step.toLocaleString("en"));
    if (log) {
      const e = log[i];
      if (chart) {
        chart.marker.setAttribute("cx", chart.sx(e.step));
        chart.marker.setAttribute("cy", chart.sy(e.val_loss));
      }
      $("learning-sample").textContent = `step ${e.step}: train loss ${fmt(e.train_loss, 4)}, held-out loss ${fmt(e.val_loss, 4)}\n\n` +
        (e.sample ?? "(no sample in this log)");
    }
    view?.(step);
  }
  slider.addEventListener("input", show);
  show();
}

// step 8's view of the snapshots -> show(step), which draws the last snapshot at or before step; null
// without snapshots
function snapshot_view(d, snaps) {
  const box = $("snapshot-view");
  if (!snaps.length) {
    box.replaceChildren(el("p", { class: "note", text: "This site was built without the run's snapshots " +
      "(out/checkpoints/), so the kid's insides cannot be shown as it learned." }));
    return null;
  }
  const s = d.snapshots, chars = d.vocab.chars, prompt = s.prompt?.text ?? "", layer = s.layer ?? 0;
  const head = el("h2"), map_box = el("div", { class: "snap-map" }), map_note = el("p", { class: "note" });
  const att_box = el("div", { class: "snap-att" }), habit_box = el("ol", { class: "snap-habits" });
  const focus_title = el("h2"), focus_box = el("div", { class: "focus-map" }), readout = el("p", { class: "readout note" });
  box.replaceChildren(head,
    el("div", { class: "two" },
       el("figure", { class: "card" }, el("figcaption", { text: "The embedding map" }), map_box, map_note),
       el("figure", { class: "card" }, el("figcaption", { text: `Layer ${layer}'s heads on ${quoted(prompt)}` }),
          att_box, el("p", { class: "note", text: "Darker is more weight; each row is a position looking back. " +
                                                  "Click a head to see it large, below." }),
          el("p", { class: "note", text: "The habits of its heads:" }), habit_box)),
    el("figure", { class: "card" }, focus_title, focus_box, readout));
  const labels = [...prompt].map(show_char);
  let current = null, chosen = 0;
  const draw_map = responsive(map_box, (width) => {
    if (current) char_map(map_box, width, chars, embedding_of(current).pca, null, true);
  });
  const draw_focus = responsive(focus_box, (width) => {
    const a = current?.attention?.[chosen];
    if (!a) return;
    focus_title.textContent = `Layer ${layer}, head ${chosen} at step ${current.step.toLocaleString("en")}` +
      (snap_habits(current, layer)[chosen] ? `: ${describe_habit(snap_habits(current, layer)[chosen])}` : "");
    attention_map(focus_box, width, a.flat(), labels, readout, `layer ${layer}, head ${chosen}`);
  });
  const show = (step) => {
    let snap = snaps[0];
    for (const x of snaps) if (x.step <= step) snap = x;
    if (snap === current) return;
    current = snap;
    const emb = embedding_of(snap);
    head.textContent = `Inside the kid at step ${snap.step.toLocaleString("en")}` +
      (snap.val_loss !== undefined && snap.val_loss !== null ? ` (held-out loss ${fmt(snap.val_loss, 3)})` : "") +
      (snaps.length === 1 ? ": the only snapshot of this run" : `: snapshot ${snaps.indexOf(snap) + 1} of ${snaps.length}`);
    draw_map();
    map_note.textContent = emb.explained
      ? `Across: ${pct(emb.explained[0])} of the variance; up: ${pct(emb.explained[1])}.` : "";
    const att = snap.attention ?? [];
    att_box.style.setProperty("--heads", att.length || 1);
    att_box.replaceChildren(...att.map((a, h) => {
      const canvas = el("canvas", { class: "heat" });
      heat_pixels(canvas, a, (v) => shade_rgb(Math.sqrt(v)));
      return el("button", { type: "button", class: "head" + (h === chosen ? " chosen" : ""), "aria-label": `head ${h}`,
                            onclick: () => { chosen = h; current = null; show(snap.step); } },
                canvas, el("span", { text: `head ${h}` }));
    }));
    readout.textContent = "Point at a square (or tap it) to read its weight.";
    draw_focus();
    const habits = snap_habits(snap, layer);
    habit_box.replaceChildren(...habits.map((h) => el("li", { text: `head ${h.head}: ${describe_habit(h)}` })));
  };
  return show;
}

// a snapshot's embedding map: {pca (V, 2), explained (2,)}
function embedding_of(snap) {
  const e = snap.embedding ?? snap;
  return { pca: e.pca, explained: e.explained };
}

// a snapshot's habits of the shown layer's heads
function snap_habits(snap, layer) {
  const h = snap.habits ?? [];
  if (!h.length) return [];
  return Array.isArray(h[0]) ? (h[layer] ?? []) : h;
}

// 9. behind the scenes: the run, parity and the calculator
async function behind(d) {
  const c = d.config, log = d.log, last = log?.[log.length - 1];
  const rows = [["checkpoint", d.checkpoint.file + (d.checkpoint.step !== null ? `, step ${d.checkpoint.step}` : "")],
                ["model", `${c.n_layer} layers, ${c.n_head} heads, ${c.n_embd} wide, ${c.block_size} characters of context`],
                ["vocabulary", `${c.vocab_size} characters`], ["parameters", d.n_params.toLocaleString("en")]];
  if (last) {
    rows.push(["evaluations", `${log.length}, every ${log.length > 1 ? log[1].step - log[0].step : "-"} steps`],
              ["final losses", `train ${fmt(last.train_loss, 4)}, held-out ${fmt(last.val_loss, 4)} at step ${last.step}`]);
    if (last.elapsed_s !== undefined) {
      const t = last.elapsed_s, took = t < 60 ? `${t.toFixed(1)} seconds` : `${(t / 60).toFixed(1)} minutes`;  // a short run, in seconds
      rows.push(["wall time", `${took}, evaluations included`]);
    }
    const lrs = log.filter((e) => e.lr !== undefined).map((e) => e.lr);
    if (lrs.length) rows.push(["learning rate", `peak ${Math.max(...lrs).toExponential(1)} (logged at each evaluation)`]);
    const rates = tokens_per_s(d);
    if (rates) rows.push(["speed", `${thousands(rates)} tokens/s on average`]);
  }
  $("run-table").replaceChildren(table(["", ""], rows));
  await calculator(d);
  if (document.body.dataset.parity !== "yes") return;
  const parity = await (await fetch_ok("data/parity.json")).json();
  $("parity-table").replaceChildren(el("p", { text: `${parity.dtype}, weights from ${parity.weights}: ${parity.ok ? "PASS" : "FAIL"}` }),
    table(["section", "tensors", "worst max rel", "tensor", "tolerance"],
          parity.sections.map((s) => [s.section, s.tensors, s.max_rel.toExponential(2), s.worst, s.tol.toExponential(0)])));
}

// the run's mean training speed in tokens a second, from log.jsonl, or null
function tokens_per_s(d) {
  const rates = (d.log ?? []).filter((e) => e.tokens_per_s).map((e) => e.tokens_per_s);
  return rates.length ? rates.reduce((a, b) => a + b, 0) / rates.length : null;
}

const bytes = (n) => n < 1e6 ? `${(n / 1e3).toFixed(0)} kB` : n < 1e9 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e9).toFixed(2)} GB`;
const big = (n) => n < 1e6 ? thousands(n) : n < 1e9 ? `${(n / 1e6).toFixed(2)} million` : n < 1e12 ? `${(n / 1e9).toFixed(2)} billion` : `${(n / 1e12).toFixed(2)} trillion`;
function duration(s) {
  if (s < 90) return `${s.toFixed(0)} seconds`;
  if (s < 5400) return `${(s / 60).toFixed(0)} minutes`;
  if (s < 48 * 3600) return `${(s / 3600).toFixed(1)} hours`;
  return `${(s / 86400).toFixed(1)} days`;
}

// the model-size calculator: sliders for the shape, and what it would cost (calc.js's arithmetic)
async function calculator(d) {
  const box = $("calc-out");
  let calc;
  try {
    calc = await import("./calc.js");
  } catch (e) {
    box.replaceChildren(el("p", { class: "note", text: `The calculator's arithmetic (calc.js) did not load: ${e.message}` }));
    return;
  }
  const presets = JSON.parse($("calc-presets").textContent);
  const sliders = { n_layer: $("calc-layers"), n_head: $("calc-heads"), n_embd: $("calc-width"),
                    block_size: $("calc-context"), vocab_size: $("calc-vocab") };
  const set = (config) => { for (const [k, s] of Object.entries(sliders)) s.value = config[k]; update(); };
  const kid = presets.kid, last = d.log?.[d.log.length - 1];
  const run = last && last.elapsed_s > 0 && last.step > 0 ? { seconds: last.elapsed_s, steps: last.step } : null;
  function update() {
    const config = Object.fromEntries(Object.entries(sliders).map(([k, s]) => [k, Number(s.value)]));
    for (const s of Object.values(sliders)) show_value(s);
    const problems = config.n_embd % config.n_head
      ? `The width (${config.n_embd}) must split evenly between the heads (${config.n_head}): each head gets width ÷ heads numbers.` : "";
    const { total, ...parts } = calc.param_counts(config);
    const flops = calc.step_flops(config, 1).total, memory = calc.memory_bytes(config);
    const is = (p) => Object.keys(sliders).every((k) => config[k] === p[k]);
    const where = is(kid) ? "This is the kid." : is(presets.nanogpt) ? "This is nanoGPT's shakespeare_char model." : "";
    const biggest = Math.max(...Object.values(parts));
    const time = run ? calc.train_time_estimate(config, kid, run.seconds, run.steps) : null;
    box.replaceChildren(
      problems ? el("p", { class: "warn", text: problems }) : "",
      el("p", { class: "calc-total" }, el("b", { text: thousands(total) }), " numbers (parameters)" +
         (is(kid) ? "" : `, ${(total / d.n_params).toFixed(total < 10 * d.n_params ? 1 : 0)} times the kid's`) + ". " + where),
      el("div", { class: "bars parts" }, ...Object.entries(parts).map(([name, n]) =>
        el("div", { class: "bar" }, el("span", { class: "label wide", text: name }),
           el("span", { class: "track" }, el("span", { class: "fill", style: `width:${(100 * n / biggest).toFixed(1)}%` })),
           el("span", { class: "value", text: thousands(n) })))),
      el("dl", { class: "calc-facts" },
         el("dt", { text: "one training step" }),
         el("dd", { text: `${big(flops)} FLOPs for each window of ${config.block_size} characters in the batch, forward and backward` }),
         el("dt", { text: "memory" }),
         el("dd", { text: `${bytes(memory.weights)} for the numbers (4 bytes each), as much again for their gradients, and ` +
                          `${bytes(memory.adam)} for AdamW's two running averages: ${bytes(memory.total)} in all, besides the ` +
                          "intermediate results a step keeps for its backward pass" }),
         el("dt", { text: "training time" }),
         el("dd", { text: time !== null
           ? `about ${duration(time)} for ${run.steps.toLocaleString("en")} steps on the machine that trained this kid, which took ` +
             `${duration(run.seconds)}: its speed in FLOPs a second, scaled by the work (larger shapes often run faster a FLOP, so this errs long)`
           : "no estimate: this site was built without the run's timing (log.jsonl)" })));
  }
  for (const s of Object.values(sliders)) s.addEventListener("input", update);
  document.querySelectorAll("#calc [data-preset]").forEach((b) => b.addEventListener("click", () => set(presets[b.dataset.preset])));
  set(kid);
}

// text as one shell word, for the command line shown under the playground: bash's $'...' where the text
// has a newline or a tab, else '...'
function shell_quote(text) {
  if (/[\n\t\\]/.test(text) || text.includes("'") && /[\n\t]/.test(text))
    return "$'" + text.replace(/\\/g, "\\\\").replace(/'/g, "\\'").replace(/\n/g, "\\n").replace(/\t/g, "\\t") + "'";
  return "'" + text.replace(/'/g, "'\\''") + "'";
}

// a whole number typed into a field, or NaN: "1e3", "2.5" and "" are not
function whole(text) {
  return /^\s*\d+\s*$/.test(text) ? Number(text) : NaN;
}

// 10. the playground: the kid writes in this tab
async function playground(d) {
  const kid = await load_kid(), { config, chars } = kid, V = config.vocab_size;
  const inputs = Object.fromEntries(["prompt", "temperature", "topk", "topp", "seed", "length"].map((k) => [k, $("play-" + k)]));
  inputs.prompt.value = d.prompt.text;
  inputs.topk.max = V;
  const out = $("play-output"), status = $("play-status"), command = $("play-command"), line = $("play-command-line");
  let running = null, ahead = null, latest = null;
  try {
    ahead = new Lookahead(kid.manifest, kid.buffer);   // the second core primes each next window
  } catch (e) {
    console.warn(`the playground runs on one core: no worker (${e.message})`);
  }
  // the settings, checked as numpy_gpt.sample checks them (numpy_gpt/machinery/cli.py) -> {settings, ids}, or an
  // Error saying what is wrong and how to fix it
  const settings = () => {
    const s = { prompt: inputs.prompt.value, temperature: Number(inputs.temperature.value),
                top_k: inputs.topk.value.trim() === "" ? null : whole(inputs.topk.value), top_p: Number(inputs.topp.value),
                seed: whole(inputs.seed.value), length: whole(inputs.length.value) };
    if (!(s.temperature >= 0)) throw new Error("The temperature must be 0 (always the likeliest) or more.");
    if (s.top_k !== null && !(s.top_k >= 1 && s.top_k <= V)) throw new Error(`Top-k must be a whole number from 1 to ${V}, or empty for all.`);
    if (!(s.top_p > 0 && s.top_p <= 1)) throw new Error("Top-p must be above 0 and at most 1.");
    if (!(s.seed >= 0 && s.seed <= SEED_MAX)) throw new Error(`The seed must be a whole number from 0 to ${SEED_MAX.toLocaleString("en")}.`);
    if (!(s.length >= 0 && s.length <= LENGTH_MAX))
      throw new Error(`The length must be a whole number from 0 to ${LENGTH_MAX.toLocaleString("en")} characters.`);
    let ids;
    try {
      ids = s.prompt === "" ? encode("\n", chars) : encode(s.prompt, chars);   // numpy_gpt.sample's rule
    } catch (e) {
      throw new Error("The prompt has " + e.message + ". Remove them to write.");
    }
    return { s, ids };
  };
  // a refused setting: one line, and nothing of an older run left to be mistaken for its result
  const refuse = (message) => {
    status.textContent = message;
    status.classList.add("refused");
    out.textContent = "";
    delete out.dataset.done;
    command.textContent = "";
    line.hidden = true;
    $("play-live").hidden = true;
    $("play-bars").replaceChildren();
    latest = null;
  };
  const check = () => {
    for (const k of ["temperature", "topp"]) show_value(inputs[k], k === "temperature" && inputs[k].value === "0" ? "0 (greedy)" : inputs[k].value);
    try {
      const { s } = settings();
      command.textContent = `python -m numpy_gpt.sample --dtype float64 --prompt ${shell_quote(s.prompt)} --seed ${s.seed} ` +
        `--temperature ${s.temperature}${s.top_k === null ? "" : ` --top-k ${s.top_k}`} --top-p ${s.top_p} --max-new-tokens ${s.length}`;
      line.hidden = false;
      status.classList.remove("refused");
      if (!running) status.textContent = "";
      return true;
    } catch (e) {
      refuse(e.message);
      return false;
    }
  };
  for (const input of Object.values(inputs)) input.addEventListener("input", check);
  check();

  // the strips show the last STRIP positions the kid sees, one column a character, labelled: the whole
  // window of block_size would leave a phone under 3 pixels a character
  const STRIP = Math.min(24, config.block_size);
  const strips = [];                                  // one canvas a head, a pixel a position
  const strip_labels = el("div", { class: "strip strip-chars" });
  const show_step = (step, text, s) => {              // s: the settings the step was drawn with
    latest = { step, text, s };
    const raw = $("play-raw").checked;
    const dist = kept_distribution(step.logits, s.temperature, s.top_k, s.top_p);
    const rows = raw ? softmax(step.logits).map((p, id) => ({ id, p })).sort((a, b) => b.p - a.p || a.id - b.id)
                     : dist.filter((r) => r.p > 0).sort((a, b) => b.p - a.p || a.id - b.id);
    bars($("play-bars"), rows.slice(0, 10).map((r) => [show_char(chars[r.id]), r.p]));
    $("play-bars-note").textContent = raw
      ? "The raw probabilities: the softmax of the scores, before temperature, top-k and top-p."
      : `What the draw used: after temperature ${s.temperature}${s.top_k ? `, top-k ${s.top_k}` : ""}` +
        `${s.top_p < 1 ? `, top-p ${s.top_p}` : ""}, rescaled to add up to 1 (${dist.filter((r) => r.p > 0).length} of ${V} characters could be drawn).`;
    const att = step.att;
    if (!strips.length)
      $("play-attention").replaceChildren(strip_labels, ...att.flatMap((heads, l) => heads.map((_, h) => {
        const canvas = el("canvas", { width: STRIP, height: 1, class: "cells" });
        strips.push(canvas);
        return el("div", { class: "strip" }, el("span", { class: "label", text: `L${l} H${h}` }), canvas);
      })));
    const n = att[0][0].length, shown = Math.min(n, STRIP), seen = [...text].slice(-shown);
    strip_labels.replaceChildren(el("span", { class: "label" }),
      el("span", { class: "chars", style: `grid-template-columns: repeat(${STRIP}, 1fr)` },
         ...seen.map((c) => el("span", { text: show_char(c) }))));
    att.flat().forEach((a, k) => {                    // one pixel a position, written as RGBA bytes
      const pixels = new ImageData(STRIP, 1);                             // transparent past the text
      let most = 1e-12;                                                   // each strip's darkest: its largest weight
      for (let j = 0; j < shown; j++) most = Math.max(most, a[n - shown + j]);
      for (let j = 0; j < shown; j++) pixels.data.set([...shade_rgb(a[n - shown + j] / most), 255], 4 * j);
      strips[k].getContext("2d").putImageData(pixels, 0, 0);
    });
    $("play-live").hidden = false;
  };
  $("play-raw").addEventListener("change", () => { if (latest) show_step(latest.step, latest.text, latest.s); });

  async function run() {
    if (!check()) return;
    const { s, ids } = settings();
    status.classList.remove("refused");
    const model = cached_run(kid, ahead), rng = default_rng(s.seed);
    out.textContent = s.prompt;
    delete out.dataset.done;
    const stream = generate(model.prefill, model.decode, ids, s.length, config.block_size, rng, s.temperature, s.top_k, s.top_p);
    running = { stop: false };
    const me = running;
    for (const input of Object.values(inputs)) input.disabled = true;   // the settings hold while it writes
    $("play-generate").disabled = true;
    $("play-stop").disabled = false;
    const start = performance.now();
    let made = 0, pending = "", step = { done: s.length === 0 }, last = null, shown = -Infinity;
    let text = s.prompt === "" ? "\n" : s.prompt;     // what the kid has seen: the window's characters
    while (!me.stop && !step.done) {
      // write for two frames' worth of time (33 ms), then show it and hand the tab back to the browser.
      // Each hand-back costs the tab a render of the page: every 16 ms, that took about a quarter of the
      // writing's time in the tab
      for (const frame_end = performance.now() + 33; performance.now() < frame_end; ) {
        const wait = model.before_next();
        if (wait) await wait;
        step = stream.next();
        if (step.done) break;
        last = { value: step.value, text };           // drawn from what the kid had seen before it
        pending += chars[step.value.token];
        text += chars[step.value.token];
        made++;
      }
      out.textContent += pending;
      pending = "";
      if (step.done) break;
      // the bars and strips change ten times a second: faster is a blur to the eye, and drawing them
      // every frame took time from the writing
      if (performance.now() - shown >= 100) {
        show_step(last.value, last.text, s);
        shown = performance.now();
      }
      status.textContent = `${made} of ${s.length} characters`;
      await next_task();
    }
    out.textContent += pending;
    const seconds = (performance.now() - start) / 1000;
    if (last) show_step(last.value, last.text, s);    // the step the last character was drawn from
    status.textContent = `${made} characters in ${seconds.toFixed(2)} s (${Math.round(made / Math.max(seconds, 1e-3))} characters/s)` +
      (me.stop ? ", stopped" : "");
    out.dataset.charsPerSecond = String(made / Math.max(seconds, 1e-3));
    out.dataset.windows = `${model.windows.ahead} of ${model.windows.primed}`;   // primed with the worker's help
    out.dataset.done = me.stop ? "stopped" : "yes";
    $("play-generate").disabled = false;
    $("play-stop").disabled = true;
    for (const input of Object.values(inputs)) input.disabled = false;
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
