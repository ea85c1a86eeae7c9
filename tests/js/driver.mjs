// Runs peek/web's kid.js and rng.js for tests/test_peek_js.py: one JSON job on stdin, one JSON answer on stdout.
//
//   node tests/js/driver.mjs < job.json
//
// job: {"weights": folder with weights.json and weights.bin (optional), "tasks": [task, ...]}
// answer: {"results": [result, ...]}, one per task in order, or {"error": message} when the weights
// do not load. Numbers go through JSON.stringify, which writes the shortest string that reads back to
// the same float64, so Python compares them bit for bit. Tasks:
//
//   {"op": "random", "seed": "123", "n": 5}            -> [5 floats]: default_rng(seed).random() x 5
//   {"op": "sum", "values": [...]}                     -> pairwise_sum(values)
//   {"op": "forward", "ids": [...]}                    -> {"logits": (T, V), "att": (L, H, T, T)}
//   {"op": "cached", "ids": [...], "n_prefill": k}     -> {"logits": (T-k+1, V), "att": (T-k+1, L, H, <=T)}:
//        prefill ids[:k], then decode ids[k:] one by one; row i is position k-1+i
//   {"op": "sample", "logits": [[...], ...], "seed", "temperature", "top_k", "top_p"}
//                                                      -> [sample_next of each row, with one rng]
//   {"op": "split", "ids": [...], "at": k}              -> {"whole", "split": each {"logits", "att", "kv"}}:
//        gpt_prefill(ids) into one cache; gpt_prefill(ids[:k]) then gpt_extend(ids[k:], k) into another
//   {"op": "generate", "prompt": [...], "n", "seed", "temperature", "top_k", "top_p", "use_cache", "ahead"}
//                                                      -> {"text", "tokens", "seconds", "windows"}
//        ahead: the page's way (ahead.js's cached_run), with a stand-in for its worker that primes each
//        next window at once, in this thread, as the worker does in its own
import { readFileSync } from "node:fs";
import { join } from "node:path";

import { gpt_decode, gpt_extend, gpt_forward, gpt_prefill, generate, load_weights, new_kv_cache, pairwise_sum,
  sample_next } from "../../peek/web/kid.js";
import { cached_run } from "../../peek/web/ahead.js";
import { default_rng } from "../../peek/web/rng.js";

const rows = (flat, n) => Array.from({ length: flat.length / n }, (_, i) => Array.from(flat.subarray(i * n, (i + 1) * n)));
// seeds come as decimal strings; small ones go in as Numbers, so both of default_rng's kinds are used
const rng_for = (seed) => default_rng(BigInt(seed) <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(seed) : BigInt(seed));

function run(task, model) {
  const { config, chars, params } = model ?? {};
  switch (task.op) {
    case "random": {
      const rng = rng_for(task.seed);
      return Array.from({ length: task.n }, () => rng.random());
    }
    case "sum":
      return pairwise_sum(Float64Array.from(task.values), 0, task.values.length);
    case "forward": {
      const { logits, att } = gpt_forward(params, config, task.ids);
      const T = task.ids.length;
      return { logits: rows(logits, config.vocab_size), att: att.map((heads) => heads.map((a) => rows(a, T))) };
    }
    case "cached": {
      const kv = new_kv_cache(config);
      const steps = [gpt_prefill(params, config, task.ids.slice(0, task.n_prefill), kv)];
      for (let pos = task.n_prefill; pos < task.ids.length; pos++)
        steps.push(gpt_decode(params, config, task.ids[pos], pos, kv));
      return { logits: steps.map((s) => Array.from(s.logits)),
               att: steps.map((s) => s.att.map((heads) => heads.map((a) => Array.from(a)))) };
    }
    case "sample": {
      const rng = rng_for(task.seed);
      return task.logits.map((l) => sample_next(Float64Array.from(l), rng, task.temperature, task.top_k, task.top_p));
    }
    case "split": {
      const one = (kv, out) => ({ logits: Array.from(out.logits), att: out.att.map((h) => h.map((a) => Array.from(a))),
                                  kv: Array.from(kv) });
      const whole = new_kv_cache(config), split = new_kv_cache(config);
      const out = gpt_prefill(params, config, task.ids, whole);
      gpt_prefill(params, config, task.ids.slice(0, task.at), split);
      return { whole: one(whole, out), split: one(split, gpt_extend(params, config, task.ids.slice(task.at), task.at, split)) };
    }
    case "generate": {
      const kv = new_kv_cache(config);
      const worker = {                           // Lookahead's prime, done at once
        prime(ids) {
          const kv = new_kv_cache(config);
          gpt_prefill(params, config, ids, kv);
          return { ids, kv, done: Promise.resolve() };
        },
      };
      const model = task.ahead ? cached_run({ params, config }, worker)
        : { prefill: (ids) => gpt_prefill(params, config, ids, kv), decode: (token, pos) => gpt_decode(params, config, token, pos, kv) };
      const t0 = performance.now();
      const tokens = [];
      for (const step of generate(model.prefill, model.decode, task.prompt, task.n, config.block_size, rng_for(task.seed),
                                  task.temperature, task.top_k, task.top_p, task.use_cache ?? true))
        tokens.push(step.token);
      const seconds = (performance.now() - t0) / 1000;
      return { text: tokens.map((t) => chars[t]).join(""), tokens, seconds, windows: model.windows ?? null };
    }
    default:
      throw new Error(`unknown op ${task.op}`);
  }
}

const job = JSON.parse(readFileSync(0, "utf-8"));
let model = null;
if (job.weights) {
  const manifest = JSON.parse(readFileSync(join(job.weights, "weights.json"), "utf-8"));
  const bytes = readFileSync(join(job.weights, "weights.bin"));
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);   // its own ArrayBuffer
  try {
    model = load_weights(manifest, buffer);
  } catch (e) {
    process.stdout.write(JSON.stringify({ error: e.message }));
    process.exit(0);
  }
}
process.stdout.write(JSON.stringify({ results: job.tasks.map((task) => run(task, model)) }));
