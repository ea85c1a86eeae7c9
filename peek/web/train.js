// The ladder's first two rungs, trained in the tab: numpy_gpt's backward of every layer they use, its
// AdamW, learning-rate schedule, clipping and batches, so that N steps here end at numpy_gpt's float64
// weights after the same N steps (tests/test_train_js.py checks it, under node and in chromium).
//
//   rung 1, bigram:    logits = bigram.weight[idx]                      a table of next-character logits
//   rung 2, attention: x = wte[idx] + wpe[:T]; y = attention(linear(x, c_attn)); logits = linear(y, lm_head)
//
// Shape key: B batch, T time, C channels, H heads, D head size (C / H), V vocab, N = B*T.
//
// Read it beside numpy_gpt: the same function names (layers.py, optim.py, data.py, ladder.py), the same
// parameter keys. A layer is a forward/backward pair: forward returns [out, cache], backward takes
// (dout, cache) and returns the gradients; no function changes its inputs or dout. Forwards that kid.js
// has for one sequence run here once per sequence of the batch. A tensor is a flat row-major
// Float64Array: an activation (B, T, C) holds row (b, t) at [(b*T + t)*C, (b*T + t + 1)*C); a Linear
// weight is (out, in), as torch stores it. Token ids are whole numbers in a Float64Array or an array.

import * as kid from "./kid.js";
import { default_rng } from "./rng.js";

// ------------------------------------------------------------------------------------------------
// token and position embeddings

// idx (B, T) ids, wte (V, C), wpe (block_size, C) -> [x (B, T, C), cache]. Saves idx and the shapes.
export function embedding_forward(idx, wte, wpe, B, C) {
  const T = idx.length / B;
  const x = new Float64Array(B * T * C);                                   // (B, T, C)
  for (let b = 0; b < B; b++)                                              // kid.js's forward, one sequence at a time
    x.set(kid.embedding_forward(idx.slice(b * T, (b + 1) * T), wte, wpe, C), b * T * C);
  return [x, { idx, B, T, C, wte_length: wte.length, wpe_length: wpe.length }];
}

// dx (B, T, C) -> [dwte (V, C), dwpe (block_size, C)]
export function embedding_backward(dx, cache) {
  const { idx, B, T, C, wte_length, wpe_length } = cache;
  // forward: x[b, t] = wte[idx[b, t]] + wpe[t]
  // term 1: every position adds its gradient to the row of its token (rows repeat, so accumulate)
  // term 2: position t's row receives the gradient of every sequence in the batch at t
  const dwte = new Float64Array(wte_length), dwpe = new Float64Array(wpe_length);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      const row = (b * T + t) * C, token = idx[b * T + t] * C;
      for (let c = 0; c < C; c++) {
        dwte[token + c] += dx[row + c];
        dwpe[t * C + c] += dx[row + c];
      }
    }
  return [dwte, dwpe];
}

// ------------------------------------------------------------------------------------------------
// Linear: out = x @ w.T + b, with w stored (out_features, in_features)

// x (N, Cin), w (Cout, Cin), b (Cout,) or null -> [out (N, Cout), cache]. Saves x and w.
export function linear_forward(x, w, b, Cout) {
  return [kid.linear_forward(x, w, b, Cout), { x, w, has_bias: b !== null, Cout }];
}

// dout (N, Cout) -> [dx (N, Cin), dw (Cout, Cin), db (Cout,) or null]
// Both products run through kid.js's blocked linear_forward (a @ w.T), on transposed copies: dx = dout @ w
// is dout @ (w.T).T, and dw = dout.T @ x is dout.T @ (x.T).T. A transpose costs N*C moves; a product,
// N*C*Cout multiply-adds.
export function linear_backward(dout, cache) {
  const { x, w, has_bias, Cout } = cache;
  const Cin = w.length / Cout, N = x.length / Cin;
  // forward: out = x @ w.T + b
  const dx = kid.linear_forward(dout, transpose(w, Cout, Cin), null, Cin);                      // (N, Cin) = dout @ w
  const dw = kid.linear_forward(transpose(dout, N, Cout), transpose(x, N, Cin), null, Cin);    // (Cout, Cin) = dout.T @ x
  let db = null;
  if (has_bias) {
    db = new Float64Array(Cout);                                           // (Cout,) = dout summed over N
    for (let n = 0; n < N; n++)
      for (let o = 0; o < Cout; o++) db[o] += dout[n * Cout + o];
  }
  return [dx, dw, db];
}

// a (rows, cols) -> a.T (cols, rows), a new array
export function transpose(a, rows, cols) {
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

// ------------------------------------------------------------------------------------------------
// causal self-attention (the part between c_attn and the output head)

// datt, att: rows of n numbers from start (one row of att = softmax(scores)) -> dscores (n,)
//   dscores_j = att_j * (datt_j - sum_i att_i * datt_i)
//     term 1: att * datt               the row's own entry
//     term 2: att * sum(att * datt)    through the normalizing sum
export function softmax_backward(datt, att, start, n) {
  let sum = 0;
  for (let j = 0; j < n; j++) sum += att[start + j] * datt[j];
  const dscores = new Float64Array(n);
  for (let j = 0; j < n; j++) dscores[j] = att[start + j] * (datt[j] - sum);
  return dscores;
}

// qkv (B, T, 3C), the output of c_attn -> [y (B, T, C), cache]. Saves q, k, v (B, H, T, D) and the
// attention probabilities att (B, H, T, T), from kid.js's forward run on each sequence.
export function attention_forward(qkv, n_head, B, T) {
  const C = qkv.length / (B * T * 3), H = n_head, D = C / H;
  const y = new Float64Array(B * T * C);                                   // (B, T, C)
  const q = new Float64Array(B * H * T * D), k = new Float64Array(B * H * T * D), v = new Float64Array(B * H * T * D);
  const att = new Float64Array(B * H * T * T);                             // (B, H, T, T)
  for (let b = 0; b < B; b++) {
    const one = kid.attention_forward(qkv.subarray(b * T * 3 * C, (b + 1) * T * 3 * C), H, T);
    y.set(one.y, b * T * C);
    q.set(one.q, b * H * T * D); k.set(one.k, b * H * T * D); v.set(one.v, b * H * T * D);
    att.set(one.att, b * H * T * T);
  }
  return [y, { q, k, v, att, B, T, H, D, scale: 1.0 / Math.sqrt(D) }];
}

// dy (B, T, C) -> dqkv (B, T, 3C). Row t of att is 0 beyond column t (the causal mask), and so is its
// gradient: the loops over keys stop at t, and the mask needs no backward of its own.
export function attention_backward(dy, cache) {
  const { q, k, v, att, B, T, H, D, scale } = cache;
  const C = H * D;
  const dqkv = new Float64Array(B * T * 3 * C);                            // (B, T, 3C)
  const datt = new Float64Array(T);                                        // one row of datt
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const hd = (b * H + h) * T * D, ht = (b * H + h) * T * T;            // where (b, h) starts in q, k, v and in att
      for (let t = 0; t < T; t++) {
        const dyt = (b * T + t) * C + h * D;                               // dy[b, t] of head h: D numbers
        // forward: y = att @ v
        //   datt[t, s] = dy[t] . v[s];   dv[s] += att[t, s] * dy[t]
        for (let s = 0; s <= t; s++) {
          let sum = 0;
          for (let d = 0; d < D; d++) sum += dy[dyt + d] * v[hd + s * D + d];
          datt[s] = sum;
          const a = att[ht + t * T + s], dv = (b * T + s) * 3 * C + 2 * C + h * D;
          for (let d = 0; d < D; d++) dqkv[dv + d] += a * dy[dyt + d];
        }
        // forward: att = softmax(scores)
        const dscores = softmax_backward(datt, att, ht + t * T, t + 1);   // (t+1,)
        // forward: scores = q @ k^T * scale
        //   dq[t] = sum_s dscores[t, s] * k[s] * scale;   dk[s] += dscores[t, s] * q[t] * scale
        const dq = (b * T + t) * 3 * C + h * D;
        for (let s = 0; s <= t; s++) {
          const g = dscores[s], dk = (b * T + s) * 3 * C + C + h * D;
          for (let d = 0; d < D; d++) {
            dqkv[dq + d] += g * (k[hd + s * D + d] * scale);
            dqkv[dk + d] += g * (q[hd + t * D + d] * scale);
          }
        }
      }
    }
  return dqkv;
}

// ------------------------------------------------------------------------------------------------
// softmax cross-entropy, the loss: mean over the N = B*T positions of -log p(target)

// logits (N, V), targets (N,) ids -> [loss (a number), cache]. Saves the probabilities and the targets.
export function cross_entropy_forward(logits, targets, V) {
  const N = targets.length;
  const probs = new Float64Array(N * V);                                   // (N, V)
  let picked = 0;                                                          // sum of log p(target)
  for (let n = 0; n < N; n++) {
    const row = n * V;
    let max = -Infinity;
    for (let j = 0; j < V; j++) if (logits[row + j] > max) max = logits[row + j];
    let sum = 0;
    for (let j = 0; j < V; j++) sum += Math.exp(logits[row + j] - max);
    const logsumexp = Math.log(sum);
    for (let j = 0; j < V; j++) probs[row + j] = Math.exp(logits[row + j] - max - logsumexp);   // exp(logprobs)
    picked += logits[row + targets[n]] - max - logsumexp;                  // logprobs[n, target]
  }
  return [-picked / N, { probs, targets, V }];
}

// dloss (1 for the loss itself) -> dlogits (N, V) = (probs - onehot(targets)) * dloss / N, the fused
// gradient that softmax's and log's collapse to
export function cross_entropy_backward(dloss, cache) {
  const { probs, targets, V } = cache;
  const N = targets.length;
  const dlogits = Float64Array.from(probs);                                // (N, V)
  for (let n = 0; n < N; n++) dlogits[n * V + targets[n]] -= 1.0;          // subtract the one-hot
  for (let i = 0; i < dlogits.length; i++) dlogits[i] *= dloss / N;
  return dlogits;
}

// ------------------------------------------------------------------------------------------------
// the rungs (numpy_gpt/ladder.py)

export const RUNGS = ["uniform", "bigram", "attention"];                   // the ones this file trains: 0, 1, 2

// rung, config {vocab_size, block_size, n_head, n_embd} -> {name: shape}, in numpy_gpt's order
export function rung_param_shapes(rung, config) {
  const { vocab_size: V, block_size, n_embd: C } = config;
  if (rung === "uniform") return {};
  if (rung === "bigram") return { "bigram.weight": [V, V] };
  if (rung === "attention")
    return { "wte.weight": [V, C], "wpe.weight": [block_size, C], "h.0.attn.c_attn.weight": [3 * C, C],
             "h.0.attn.c_attn.bias": [3 * C], "lm_head.weight": [V, C] };
  throw new Error(`no rung ${JSON.stringify(rung)} in the tab; it trains ${RUNGS.join(", ")}`);
}

// idx (B, T) ids, targets (B, T) ids or null -> [logits (B, T, V), loss or null, cache]
export function rung_forward(rung, params, config, idx, targets, B) {
  const { vocab_size: V, n_head: H, n_embd: C } = config;
  const T = idx.length / B;
  const cache = {};
  let logits;
  if (rung === "uniform") {
    logits = new Float64Array(B * T * V);                                  // every character as likely
  } else if (rung === "bigram") {
    // the token embedding alone, V wide, so that a character's row is the next one's logits; no
    // position table (embedding_forward adds one: here, zeros)
    [logits, cache.bigram] = embedding_forward(idx, params["bigram.weight"], new Float64Array(T * V), B, V);   // (B, T, V)
  } else if (rung === "attention") {
    let x, qkv, y;
    [x, cache.embed] = embedding_forward(idx, params["wte.weight"], params["wpe.weight"], B, C);   // (B, T, C)
    [qkv, cache["h.0.attn.c_attn"]] = linear_forward(x, params["h.0.attn.c_attn.weight"],
                                                     params["h.0.attn.c_attn.bias"], 3 * C);       // (B, T, 3C)
    [y, cache["h.0.attn"]] = attention_forward(qkv, H, B, T);                                       // (B, T, C)
    [logits, cache.lm_head] = linear_forward(y, params["lm_head.weight"], null, V);                // (B, T, V)
  } else {
    rung_param_shapes(rung, config);                                       // throws: no such rung here
  }
  let loss = null;
  if (targets !== null) [loss, cache.loss] = cross_entropy_forward(logits, targets, V);
  return [logits, loss, cache];
}

// The forward in reverse, seeded with dloss = 1 -> grads: name -> gradient, the keys of params
export function rung_backward(rung, params, config, cache) {
  const grads = {};
  const dlogits = cross_entropy_backward(1.0, cache.loss);                 // (B, T, V)
  if (rung === "bigram") {
    [grads["bigram.weight"]] = embedding_backward(dlogits, cache.bigram);
  } else if (rung === "attention") {
    let dy, dqkv, dx;
    [dy, grads["lm_head.weight"]] = linear_backward(dlogits, cache.lm_head);                        // (B, T, C)
    dqkv = attention_backward(dy, cache["h.0.attn"]);                                               // (B, T, 3C)
    [dx, grads["h.0.attn.c_attn.weight"], grads["h.0.attn.c_attn.bias"]] = linear_backward(dqkv, cache["h.0.attn.c_attn"]);
    [grads["wte.weight"], grads["wpe.weight"]] = embedding_backward(dx, cache.embed);
  }
  return Object.fromEntries(Object.keys(params).map((name) => [name, grads[name]]));
}

// ------------------------------------------------------------------------------------------------
// AdamW, global-norm gradient clipping and the learning-rate schedule (numpy_gpt/optim.py)

// Weight decay applies to the 2-D weights (matmuls and embeddings), never to biases
export const decays = (name, shape) => shape.length === 2;

// The learning rate for optimizer step `step` (0-based) of a run of total_steps: linear warmup from
// lr/warmup_steps up to lr, then a half cosine from lr down to min_lr, reached at total_steps
export function lr_at(step, lr, min_lr, warmup_steps, total_steps) {
  if (step < warmup_steps) return lr * (step + 1) / warmup_steps;
  const progress = (step - warmup_steps) / Math.max(1, total_steps - warmup_steps);   // 0 -> 1
  return min_lr + 0.5 * (1.0 + Math.cos(Math.PI * Math.min(progress, 1.0))) * (lr - min_lr);
}

// Scale all gradients together so their global L2 norm is at most max_norm -> [grads, the norm before
// clipping]. As torch: coef = max_norm / (norm + 1e-6), used only when below 1; max_norm <= 0 turns it off.
export function clip_grad_norm(grads, max_norm) {
  let sumsq = 0;
  for (const g of Object.values(grads)) for (let i = 0; i < g.length; i++) sumsq += g[i] * g[i];
  const norm = Math.sqrt(sumsq);
  const coef = max_norm / (norm + 1e-6);
  if (max_norm <= 0 || coef >= 1.0) return [grads, norm];
  return [Object.fromEntries(Object.entries(grads).map(([name, g]) => [name, g.map((x) => x * coef)])), norm];
}

// Optimizer state: the step count and each parameter's first and second moment, all zeros
export function adamw_init(params) {
  const zeros = () => Object.fromEntries(Object.entries(params).map(([name, p]) => [name, new Float64Array(p.length)]));
  return { step: 0, m: zeros(), v: zeros() };
}

// One AdamW update, in place on params and state (Loshchilov & Hutter, arXiv:1711.05101); shapes tells
// the 2-D weights, which decay.
//     m = b1 m + (1 - b1) g                 moving mean of the gradient
//     v = b2 v + (1 - b2) g^2               moving mean of its square
//     m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)      bias correction: m, v start at 0
//     p = p - lr * wd * p                   decoupled weight decay (2-D weights only)
//     p = p - lr * m_hat / (sqrt(v_hat) + eps)
export function adamw_step(params, grads, state, lr, shapes, betas = [0.9, 0.99], eps = 1e-8, weight_decay = 0.1) {
  const [b1, b2] = betas;
  state.step += 1;
  const t = state.step;
  for (const [name, p] of Object.entries(params)) {
    const g = grads[name], m = state.m[name], v = state.v[name];
    const decay = weight_decay && decays(name, shapes[name]);
    for (let i = 0; i < p.length; i++) {
      m[i] = m[i] * b1 + (1 - b1) * g[i];
      v[i] = v[i] * b2 + (1 - b2) * (g[i] * g[i]);
      const m_hat = m[i] / (1 - b1 ** t), v_hat = v[i] / (1 - b2 ** t);
      if (decay) p[i] *= 1 - lr * weight_decay;
      p[i] -= lr * (m_hat / (Math.sqrt(v_hat) + eps));
    }
  }
}

// ------------------------------------------------------------------------------------------------
// the batches (numpy_gpt/data.py): the same random windows as numpy_gpt draws, from the same streams

export const INIT = 1, BATCH = 2, DROPOUT = 3, EVAL = 4, SAMPLE = 5;       // the streams' tags

// The generator for one stream: numpy_gpt.data.stream(seed, tag, *key)
export const stream = (seed, tag, ...key) => default_rng([seed, tag, ...key]);

// The generator for one micro-batch of one optimizer step: numpy_gpt.data.batch_rng
export const batch_rng = (seed, step, micro_batch = 0) => stream(seed, BATCH, step, micro_batch);

// B random windows of T+1 characters -> [x (B, T), y (B, T)]: x is each window's first T, y the same
// shifted by one. ids (N,) ids; rng from rng.js's default_rng.
export function get_batch(ids, batch_size, block_size, rng) {
  const B = batch_size, T = block_size;
  const start = rng.integers(0, ids.length - T, B);                        // (B,): windows 0 .. N-T-1
  const x = new Float64Array(B * T), y = new Float64Array(B * T);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      x[b * T + t] = ids[start[b] + t];
      y[b * T + t] = ids[start[b] + t + 1];
    }
  return [x, y];
}

// Fixed batches for measuring loss, the same at every evaluation: numpy_gpt.data.eval_batches
export function eval_batches(ids, n_batches, batch_size, block_size, seed, split = 0) {
  const rng = stream(seed, EVAL, split);
  return Array.from({ length: n_batches }, () => get_batch(ids, batch_size, block_size, rng));
}

// ------------------------------------------------------------------------------------------------
// training

// One optimizer step of a rung, as numpy_gpt.ladder.train_rung takes it: the step's batch, forward,
// backward, clipping, AdamW at lr_at(step) -> the batch's loss. settings: {seed, batch_size, steps, lr,
// min_lr, warmup_steps, weight_decay, beta1, beta2, grad_clip}; state from adamw_init.
export function train_step(rung, params, config, state, ids_train, step, settings) {
  const s = settings, B = s.batch_size;
  const [x, y] = get_batch(ids_train, B, config.block_size, batch_rng(s.seed, step));
  const [, loss, cache] = rung_forward(rung, params, config, x, y, B);
  const [grads] = clip_grad_norm(rung_backward(rung, params, config, cache), s.grad_clip);
  const lr = lr_at(step, s.lr, s.min_lr, s.warmup_steps, s.steps);
  adamw_step(params, grads, state, lr, rung_param_shapes(rung, config), [s.beta1, s.beta2], 1e-8, s.weight_decay);
  return loss;
}

// The mean loss over fixed batches (from eval_batches)
export function evaluate(rung, params, config, batches) {
  let sum = 0;
  for (const [x, y] of batches) sum += rung_forward(rung, params, config, x, y, x.length / config.block_size)[1];
  return sum / batches.length;
}

// The logits (V,) after the last of ids, with at most block_size characters of context: the prefill
// that kid.js's generate calls, for a rung
export function rung_prefill(rung, params, config, ids) {
  const V = config.vocab_size, T = ids.length;
  const [logits] = rung_forward(rung, params, config, Float64Array.from(ids), null, 1);
  return { logits: logits.subarray((T - 1) * V, T * V), att: [] };
}
