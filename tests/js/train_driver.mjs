// Runs peek/web's train.js for tests/test_train_js.py: one JSON job on stdin, one JSON answer on stdout.
//
//   node tests/js/train_driver.mjs < job.json
//
// job: {"tasks": [task, ...]}; answer: {"results": [result, ...]}, one per task in order. Tensors travel as
// flat lists in row-major order; JSON.stringify writes the shortest string that reads back to the same
// float64, so Python sees the numbers bit for bit. Tasks:
//
//   {"op": "integers", "seed": [..], "low", "high", "size", "calls"}  -> [calls lists]: default_rng(seed).integers x calls
//        (the seed's words as decimal strings: small ones go in as Numbers, large ones as BigInts)
//   {"op": "batch", "ids", "batch_size", "block_size", "seed", "step"} -> {"x", "y"}: get_batch(..., batch_rng(seed, step))
//   {"op": "eval_batches", "ids", "n", "batch_size", "block_size", "seed", "split"} -> [{"x", "y"}, ...]
//   {"op": "embedding", "idx", "B", "wte", "wpe", "C", "dout"}         -> {"out", "dwte", "dwpe"}
//   {"op": "linear", "x", "w", "b" (or null), "Cout", "dout"}          -> {"out", "dx", "dw", "db"}
//   {"op": "attention", "qkv", "n_head", "B", "T", "dout"}             -> {"out", "att", "dqkv"}
//   {"op": "cross_entropy", "logits", "targets", "V", "dloss"}         -> {"loss", "dlogits"}
//   {"op": "rung", "rung", "config", "params", "idx", "targets", "B"}  -> {"logits", "loss", "grads"}
//   {"op": "clip", "grads", "max_norm"}                                -> {"grads", "norm"}
//   {"op": "adamw", "params", "shapes", "grads": [step's grads, ...], "lrs", "betas", "eps", "weight_decay"}
//                                                                       -> {"params", "m", "v"} after the steps
//   {"op": "lr_at", "steps": [..], "lr", "min_lr", "warmup_steps", "total_steps"} -> [lr of each step]
//   {"op": "train", "rung", "config", "params", "ids", "settings", "steps"}
//                                                                       -> {"params", "losses"} after steps train_steps
import { readFileSync } from "node:fs";

import * as train from "../../peek/web/train.js";
import { default_rng } from "../../peek/web/rng.js";

const f64 = (list) => Float64Array.from(list);
const list = (a) => (a === null ? null : Array.from(a));
const tensors = (obj) => Object.fromEntries(Object.entries(obj).map(([name, a]) => [name, f64(a)]));
const lists = (obj) => Object.fromEntries(Object.entries(obj).map(([name, a]) => [name, list(a)]));

function run(task) {
  switch (task.op) {
    case "integers": {
      const rng = default_rng(task.seed.map((w) => (BigInt(w) <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(w) : BigInt(w))));
      return Array.from({ length: task.calls }, () => list(rng.integers(task.low, task.high, task.size)));
    }
    case "batch": {
      const [x, y] = train.get_batch(task.ids, task.batch_size, task.block_size, train.batch_rng(task.seed, task.step));
      return { x: list(x), y: list(y) };
    }
    case "eval_batches":
      return train.eval_batches(task.ids, task.n, task.batch_size, task.block_size, task.seed, task.split)
        .map(([x, y]) => ({ x: list(x), y: list(y) }));
    case "embedding": {
      const [out, cache] = train.embedding_forward(task.idx, f64(task.wte), f64(task.wpe), task.B, task.C);
      const [dwte, dwpe] = train.embedding_backward(f64(task.dout), cache);
      return { out: list(out), dwte: list(dwte), dwpe: list(dwpe) };
    }
    case "linear": {
      const [out, cache] = train.linear_forward(f64(task.x), f64(task.w), task.b === null ? null : f64(task.b), task.Cout);
      const [dx, dw, db] = train.linear_backward(f64(task.dout), cache);
      return { out: list(out), dx: list(dx), dw: list(dw), db: list(db) };
    }
    case "attention": {
      const [out, cache] = train.attention_forward(f64(task.qkv), task.n_head, task.B, task.T);
      return { out: list(out), att: list(cache.att), dqkv: list(train.attention_backward(f64(task.dout), cache)) };
    }
    case "cross_entropy": {
      const [loss, cache] = train.cross_entropy_forward(f64(task.logits), task.targets, task.V);
      return { loss, dlogits: list(train.cross_entropy_backward(task.dloss, cache)) };
    }
    case "rung": {
      const params = tensors(task.params);
      const [logits, loss, cache] = train.rung_forward(task.rung, params, task.config, task.idx, task.targets, task.B);
      return { logits: list(logits), loss, grads: lists(train.rung_backward(task.rung, params, task.config, cache)) };
    }
    case "clip": {
      const [grads, norm] = train.clip_grad_norm(tensors(task.grads), task.max_norm);
      return { grads: lists(grads), norm };
    }
    case "adamw": {
      const params = tensors(task.params), state = train.adamw_init(params);
      task.grads.forEach((grads, i) => train.adamw_step(params, tensors(grads), state, task.lrs[i], task.shapes, task.betas,
                                                        task.eps, task.weight_decay));
      return { params: lists(params), m: lists(state.m), v: lists(state.v) };
    }
    case "lr_at":
      return task.steps.map((s) => train.lr_at(s, task.lr, task.min_lr, task.warmup_steps, task.total_steps));
    case "train": {
      const params = tensors(task.params), state = train.adamw_init(params);
      const ids = f64(task.ids), losses = [];
      for (let step = 0; step < task.steps; step++)
        losses.push(train.train_step(task.rung, params, task.config, state, ids, step, task.settings));
      return { params: lists(params), losses };
    }
    default:
      throw new Error(`unknown op ${task.op}`);
  }
}

const job = JSON.parse(readFileSync(0, "utf-8"));
process.stdout.write(JSON.stringify({ results: job.tasks.map(run) }));
