// The ladder page's code: trains rung 1 or 2 in this tab with train.js and draws the loss curve and a
// sample as it goes. DOM and chart only; the model, its backward, the optimizer and the batches are
// train.js's, the sampling rule kid.js's.
//
// data/ladder.json (peek/ladder_tab.py) gives the sizes and settings, ladder.txt the text, and
// ladder-init.bin each rung's first weights (float64), drawn by numpy_gpt.ladder.init_rung.
// Training runs in chunks of about CHUNK_MS, each of whole steps, so the page answers between them.
import * as train from "./train.js";
import { generate } from "./kid.js";
import { default_rng } from "./rng.js";
import { $, el, fail, fetch_ok } from "./dom.js";

const CHUNK_MS = 40;                 // the longest the page goes without answering, give or take a step
const DRAW_EVERY_MS = 100;           // while training, the status and chart are redrawn at most this often,
const SAMPLE_EVERY_MS = 500;         // and the sample at most this often, and then only so that writing it
const SAMPLE_SHARE = 0.1;            // takes at most this share of the time
const PROMPT = "ROMEO:", SAMPLE_CHARS = 200;

// ------------------------------------------------------------------------------------------------
// the state of the tab: one per rung, so that switching rungs keeps each one's progress.
// globalThis.ladderTab holds it, for a look from the browser's console (and for the browser test).

const tab = { manifest: null, chars: null, train_ids: null, val_ids: null, init: null, rung: "bigram",
              runs: {}, running: false };
globalThis.ladderTab = tab;

// the rung's first weights, fresh copies of ladder-init.bin's float64 numbers
function first_weights(rung) {
  const params = {};
  for (const t of tab.manifest.rungs[rung].init)
    params[t.name] = new Float64Array(tab.init.slice(t.offset, t.offset + 8 * t.length));
  return params;
}

function new_run(rung) {
  const { config, settings } = tab.manifest.rungs[rung];
  const params = first_weights(rung);
  const run = { rung, config, settings, params, state: train.adamw_init(params), step: 0,
                losses: [], vals: [], sample: "", seconds: 0, wall_seconds: 0,
                next_sample: 0, next_draw: 0,
                evals: train.eval_batches(tab.val_ids, tab.manifest.eval_batches, settings.batch_size,
                                          config.block_size, settings.seed, 1) };
  run.vals.push([0, train.evaluate(rung, params, config, run.evals), performance.now()]);   // [step, val loss, when]
  run.sample = write_sample(run);
  return run;
}

// SAMPLE_CHARS characters after PROMPT from the run's weights, with the same random numbers every time
function write_sample(run) {
  const { rung, params, config } = run;
  const ids = Array.from(PROMPT, (c) => tab.chars.indexOf(c));
  const prefill = (window) => train.rung_prefill(rung, params, config, window);
  const rng = default_rng(run.settings.seed);
  let text = "";
  for (const { token } of generate(prefill, null, ids, SAMPLE_CHARS, config.block_size, rng, 1.0, null, 1.0, false))
    text += tab.chars[token];
  return text;
}

// ------------------------------------------------------------------------------------------------
// training, a chunk at a time

function chunk() {
  if (!tab.running) return;
  const run = tab.runs[tab.rung];
  const { settings, config, params, state } = run;
  const interval = tab.manifest.eval_interval;
  const t0 = performance.now();
  while (run.step < settings.steps && performance.now() - t0 < CHUNK_MS) {
    const loss = train.train_step(run.rung, params, config, state, tab.train_ids, run.step, settings);
    run.step += 1;
    run.losses.push(loss);
    if (run.step % interval === 0 || run.step === settings.steps)
      run.vals.push([run.step, train.evaluate(run.rung, params, config, run.evals), performance.now()]);
  }
  const now = performance.now();
  run.seconds += (now - t0) / 1000;
  const done = run.step >= settings.steps;
  if (done || now > run.next_sample) {
    run.sample = write_sample(run);
    const took = performance.now() - now;
    run.next_sample = performance.now() + Math.max(SAMPLE_EVERY_MS, took / SAMPLE_SHARE);
  }
  if (done) stop(run);
  if (done || performance.now() > run.next_draw) {
    draw();
    run.next_draw = performance.now() + DRAW_EVERY_MS;
  }
  if (tab.running) tab.timer = setTimeout(chunk, 0);
}

function start() {
  const run = tab.runs[tab.rung];
  if (run.step >= run.settings.steps) return;
  tab.running = true;
  run.started = performance.now();
  draw();
  tab.timer = setTimeout(chunk, 0);
}

// stop training (the chunk under way has finished its steps): run.wall_seconds counts the time from
// Train to here, drawing and sampling included
function stop(run) {
  if (tab.running) run.wall_seconds += (performance.now() - run.started) / 1000;
  tab.running = false;
  clearTimeout(tab.timer);             // a chunk already scheduled does not run
}

function pause() {
  stop(tab.runs[tab.rung]);
  draw();
}

function reset() {
  stop(tab.runs[tab.rung]);
  tab.runs[tab.rung] = new_run(tab.rung);
  draw();
}

function choose(rung) {
  if (tab.runs[tab.rung]) stop(tab.runs[tab.rung]);
  tab.rung = rung;
  tab.runs[rung] ??= new_run(rung);
  draw();
}

// ------------------------------------------------------------------------------------------------
// drawing

const fmt = (x, digits = 3) => x.toFixed(digits);
const thousands = (n) => n.toLocaleString("en-US");

function draw() {
  const run = tab.runs[tab.rung];
  const { settings } = run;
  for (const b of $("rungs").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.rung === tab.rung));
  const button = $("train-pause");
  const done = run.step >= settings.steps;
  button.textContent = tab.running ? "Pause" : done ? "Done" : run.step ? "Go on" : "Train";
  button.classList.toggle("running", tab.running);
  button.disabled = done && !tab.running;
  $("reset").disabled = run.step === 0;
  const val = run.vals[run.vals.length - 1];
  const recent = run.losses.slice(-20);
  const elapsed = run.wall_seconds + (tab.running ? (performance.now() - run.started) / 1000 : 0);
  const rate = run.step / Math.max(elapsed, 1e-9);                   // steps a second, drawing included
  const parts = [`step ${thousands(run.step)} of ${thousands(settings.steps)}`,
                 `val loss ${fmt(val[1])} (at step ${thousands(val[0])})`];
  if (recent.length) parts.push(`train loss ${fmt(recent.reduce((a, b) => a + b, 0) / recent.length)} (last ${recent.length} steps)`);
  if (run.step) parts.push(`${rate.toFixed(rate < 10 ? 1 : 0)} steps/s`);
  if (tab.running) parts.push(`about ${Math.ceil((settings.steps - run.step) / rate)} s to go`);
  if (done) parts.push(`done in ${run.wall_seconds.toFixed(1)} s`);
  $("status").textContent = parts.join(" · ");
  document.body.dataset.trainStep = String(run.step);           // for the browser test
  document.body.dataset.running = String(tab.running);
  draw_chart(run);
  const sample = $("sample");
  sample.replaceChildren(el("b", { text: PROMPT }), run.sample);
  const p = tab.manifest.rungs[run.rung].init.reduce((n, t) => n + t.length, 0);
  $("about-rung").textContent = run.rung === "bigram"
    ? `Rung 1 has ${thousands(p)} numbers: the 65 × 65 table. Its loss levels off early: a table that sees ` +
      `only the last character has little more to learn once it knows which letters tend to follow which.`
    : `Rung 2 has ${thousands(p)} numbers: embeddings ${run.config.n_embd} wide for the 65 characters and ` +
      `${run.config.block_size} positions, one attention head, and the output layer. (The kid's embeddings are ` +
      `128 wide, for 128 positions; here they are smaller, so that a step takes tens of milliseconds.)`;
  $("settings").textContent = `Settings in this tab: batches of ${settings.batch_size} windows of ` +
    `${run.config.block_size} characters, ${thousands(settings.steps)} steps, learning rate ${settings.lr} ` +
    `after ${settings.warmup_steps} steps of warmup, decaying to ${settings.min_lr}; the val loss is the mean over ` +
    `${tab.manifest.eval_batches} fixed batches of the last 15,000 characters, which training never sees.`;
}

// the train loss of every step (thin) and the val loss every few steps (thick), over the whole run
function draw_chart(run) {
  const svg = $("chart");
  const W = Math.max(300, Math.round(svg.getBoundingClientRect().width || 600)), H = 260;
  const left = 44, right = 12, top = 12, bottom = 34;
  const steps = run.settings.steps, lo = 1.5, hi = 4.5;
  const x = (s) => left + (s / steps) * (W - left - right);
  const y = (v) => top + (1 - (Math.min(Math.max(v, lo), hi) - lo) / (hi - lo)) * (H - top - bottom);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const nodes = [];
  for (let v = 2; v <= 4; v += 0.5) {
    nodes.push(el("svg:line", { class: "gridline", x1: left, x2: W - right, y1: y(v), y2: y(v) }),
               el("svg:text", { class: "tick", x: left - 6, y: y(v) + 4, "text-anchor": "end", text: v.toFixed(1) }));
  }
  for (let i = 0; i <= 4; i++) {
    const s = Math.round(steps * i / 4);
    nodes.push(el("svg:text", { class: "tick", x: x(s), y: H - bottom + 15, "text-anchor": i ? i === 4 ? "end" : "middle" : "start",
                                text: thousands(s) }));
  }
  nodes.push(el("svg:text", { class: "axis", x: (left + W - right) / 2, y: H - 4, "text-anchor": "middle", text: "step" }));
  const ln65 = Math.log(65);
  nodes.push(el("svg:line", { class: "floor", x1: left, x2: W - right, y1: y(ln65), y2: y(ln65) }),
             el("svg:text", { class: "floor-label", x: W - right - 4, y: y(ln65) - 5, "text-anchor": "end",
                              text: "rung 0, uniform: ln 65 = 4.17" }));
  const bigram = tab.runs.bigram;
  if (run.rung === "attention" && bigram && bigram.step > 0) {          // the rung below, as trained in this tab
    const [step, val] = bigram.vals[bigram.vals.length - 1];
    nodes.push(el("svg:line", { class: "floor", x1: left, x2: W - right, y1: y(val), y2: y(val) }),
               el("svg:text", { class: "floor-label", x: W - right - 4, y: y(val) - 5, "text-anchor": "end",
                                text: `rung 1, bigram, here after ${thousands(step)} steps: ${fmt(val)}` }));
  }
  const every = Math.max(1, Math.floor(run.losses.length / (W - left - right)));   // at most a point a pixel
  let train_points = "";
  for (let i = 0; i < run.losses.length; i += every) train_points += `${x(i + 1).toFixed(1)},${y(run.losses[i]).toFixed(1)} `;
  nodes.push(el("svg:polyline", { class: "series s0", points: train_points }),
             el("svg:polyline", { class: "series s1", points: run.vals.map(([s, v]) => `${x(s).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }),
             el("svg:text", { class: "legend s0", x: left + 8, y: H - bottom - 24, text: "train loss, each step's batch" }),
             el("svg:text", { class: "legend s1", x: left + 8, y: H - bottom - 8, text: "val loss, text it never trains on" }));
  svg.replaceChildren(...nodes);
}

// the ladder's table from `python -m numpy_gpt.ladder`, as ladder.json carries it: {caption, rows}
function draw_table(table) {
  if (!table || !Array.isArray(table.rows) || !table.rows.length) {
    $("table").replaceChildren(el("p", { class: "note", text: "The table of all seven rungs is not part of this copy of the site: it is on the project's " +
      "docs/ladder.md page, and python -m numpy_gpt.ladder trains them again." }));
    return;
  }
  const keys = Object.keys(table.rows[0]);
  $("table").replaceChildren(el("table", {},
    el("caption", { class: "note", text: table.caption }),
    el("thead", {}, el("tr", {}, ...keys.map((k) => el("th", { text: k })))),
    el("tbody", {}, ...table.rows.map((r) => el("tr", {}, ...keys.map((k) => el("td", { text: String(r[k]) })))))));
}

// ------------------------------------------------------------------------------------------------
// loading

async function main() {
  const manifest = await (await fetch_ok("data/ladder.json")).json();
  tab.manifest = manifest;
  draw_table(manifest.table);
  if (!manifest.text) {
    $("status").textContent = "This site was built without tinyshakespeare, so there is nothing to train on here. " +
      "Build it with the text at data/tinyshakespeare.txt (python -m peek build).";
    return;
  }
  const [text, init] = await Promise.all([fetch_ok(`data/${manifest.text.file}`).then((r) => r.text()),
                                          fetch_ok(`data/${manifest.init.file}`).then((r) => r.arrayBuffer())]);
  if (init.byteLength !== manifest.init.bytes)
    throw new Error(`data/${manifest.init.file} has ${init.byteLength} bytes, ladder.json says ${manifest.init.bytes}: build the site again`);
  tab.chars = Array.from(manifest.vocab);
  const stoi = new Map(tab.chars.map((c, i) => [c, i]));
  const ids = Float64Array.from(Array.from(text), (c) => {
    if (!stoi.has(c)) throw new Error(`data/${manifest.text.file} has ${JSON.stringify(c)}, not in the vocabulary: build the site again`);
    return stoi.get(c);
  });
  const n = Math.floor(0.9 * ids.length);                        // numpy_gpt.data.split_train_val
  tab.train_ids = ids.subarray(0, n);
  tab.val_ids = ids.subarray(n);
  tab.init = init;
  choose("bigram");
  for (const b of $("rungs").querySelectorAll("button")) b.addEventListener("click", () => choose(b.dataset.rung));
  $("train-pause").addEventListener("click", () => (tab.running ? pause() : start()));
  $("reset").addEventListener("click", reset);
  addEventListener("resize", () => draw_chart(tab.runs[tab.rung]));
}

main().catch((e) => fail(`The ladder could not start: ${e.message}`));
