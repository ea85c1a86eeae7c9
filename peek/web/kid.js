// The kid in plain JavaScript: numpy_gpt's forward, its KV-cached decoding and its sampling rule, for a
// page to run. Pure functions on typed arrays: no DOM, no dependencies, so node tests it
// (tests/test_peek_js.py) against numpy_gpt.
//
// Shape key: T time, C channels, H heads, D head size (C / H), V vocab, L layers. The batch size is 1,
// so numpy_gpt's B is dropped: its (B, T, C) is (T, C) here.
//
// Read it beside numpy_gpt: the same function names (layers.py, model.py, sampling.py), the same
// parameter keys, in the same order. A tensor is a flat row-major typed array: an activation (T, C) is
// a Float64Array of T*C numbers, row t at [t*C, (t+1)*C); a weight is a Float32Array view of
// weights.bin, Linear weights (out, in) as torch stores them. All arithmetic is float64, so the logits
// equal numpy_gpt's float64 run on the same float32 weights up to the order of the sums.

// ------------------------------------------------------------------------------------------------
// the weights: weights.json (the manifest) and weights.bin, as peek/weights.py writes them

const FORMAT = "tiny-llm peek weights", VERSION = 1;
const CONFIG_KEYS = ["vocab_size", "block_size", "n_layer", "n_head", "n_embd"];   // GPTConfig's fields

// config -> {name: shape}, in torch_gpt's state_dict() order (numpy_gpt.model.param_shapes)
export function param_shapes(config) {
  const { vocab_size: V, block_size, n_layer: L, n_embd: C } = config;
  const shapes = { "wte.weight": [V, C], "wpe.weight": [block_size, C] };
  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`;
    Object.assign(shapes, {
      [p + "ln_1.weight"]: [C], [p + "ln_1.bias"]: [C],
      [p + "attn.c_attn.weight"]: [3 * C, C], [p + "attn.c_attn.bias"]: [3 * C],
      [p + "attn.c_proj.weight"]: [C, C], [p + "attn.c_proj.bias"]: [C],
      [p + "ln_2.weight"]: [C], [p + "ln_2.bias"]: [C],
      [p + "mlp.c_fc.weight"]: [4 * C, C], [p + "mlp.c_fc.bias"]: [4 * C],
      [p + "mlp.c_proj.weight"]: [C, 4 * C], [p + "mlp.c_proj.bias"]: [C],
    });
  }
  Object.assign(shapes, { "ln_f.weight": [C], "ln_f.bias": [C], "lm_head.weight": [V, C] });
  return shapes;
}

// zlib's CRC-32 (reflected polynomial 0xEDB88320), as Python's zlib.crc32: bytes (Uint8Array) -> uint32
const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  for (let k = 0; k < 8; k++) n = n & 1 ? 0xedb88320 ^ (n >>> 1) : n >>> 1;
  return n;
});

export function crc32(bytes) {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

// manifest: the parsed weights.json; buffer: weights.bin as an ArrayBuffer
// -> {config, chars (an array of V one-character strings, in id order), params ({name: Float32Array})}.
// Every problem throws an Error whose one-line message says what is wrong.
export function load_weights(manifest, buffer) {
  const fail = (what) => { throw new Error(`${what}; export the weights again with \`python -m peek export\``); };
  if (manifest === null || typeof manifest !== "object" || manifest.format !== FORMAT)
    fail(`weights.json is not a "${FORMAT}" manifest`);
  if (manifest.version !== VERSION)
    fail(`weights.json is version ${JSON.stringify(manifest.version)}, this page reads version ${VERSION}`);
  const config = manifest.config;
  if (config === null || typeof config !== "object") fail("weights.json has no config");
  for (const key of CONFIG_KEYS)
    if (!Number.isInteger(config[key]) || config[key] < 1)
      fail(`weights.json: config ${key} must be a positive integer, got ${JSON.stringify(config[key])}`);
  if (config.n_embd % config.n_head)
    fail(`weights.json: n_embd (${config.n_embd}) is not divisible by n_head (${config.n_head})`);
  const chars = typeof manifest.vocab === "string" ? Array.from(manifest.vocab) : [];
  if (chars.length !== config.vocab_size)
    fail(`weights.json: the vocabulary is not a string of vocab_size=${config.vocab_size} characters`);
  if (!(buffer instanceof ArrayBuffer)) fail("weights.bin was not read as an ArrayBuffer");
  if (buffer.byteLength !== manifest.bytes)
    fail(`weights.bin has ${buffer.byteLength} bytes, its manifest says ${manifest.bytes}: it is truncated or from another export`);
  if (new Uint8Array(Float32Array.of(1).buffer)[3] !== 0x3f)
    throw new Error("this machine is big-endian; weights.bin is little-endian float32");
  const tensors = new Map((Array.isArray(manifest.tensors) ? manifest.tensors : []).map((t) => [t && t.name, t]));
  const params = {};
  for (const [name, shape] of Object.entries(param_shapes(config))) {
    const t = tensors.get(name);
    if (!t || !Array.isArray(t.shape) || t.shape.join() !== shape.join())
      fail(`weights.json: tensor ${name} is missing or not of shape [${shape.join(", ")}]`);
    const length = shape.reduce((a, b) => a * b, 1);
    if (t.length !== length || !Number.isInteger(t.offset) || t.offset % 4 || t.offset < 0 ||
        t.offset + 4 * length > buffer.byteLength)
      fail(`weights.json: tensor ${name} has length ${t.length} at offset ${t.offset}, which does not fit ` +
           `${length} float32 values inside weights.bin`);
    const crc = crc32(new Uint8Array(buffer, t.offset, 4 * length));
    if (crc !== t.crc32)
      fail(`weights.bin: tensor ${name} fails its crc32 check (${crc}, the manifest says ${t.crc32}): ` +
           `the file is corrupt or from another export`);
    params[name] = new Float32Array(buffer, t.offset, length);
  }
  return { config, chars, params };
}

// ------------------------------------------------------------------------------------------------
// the layers (numpy_gpt/layers.py), forward only, in the order the model runs them

// ids (T,) ints, wte (V, C), wpe (block_size, C) -> x (T, C)
export function embedding_forward(ids, wte, wpe, C) {
  const T = ids.length;
  const x = new Float64Array(T * C);                                      // (T, C)
  for (let t = 0; t < T; t++)
    for (let c = 0; c < C; c++) x[t * C + c] = wte[ids[t] * C + c] + wpe[t * C + c];
  return x;
}

// x (T, C), w (C,), b (C,) -> out (T, C): (x - mean) / sqrt(var + eps) * w + b over each row,
// with the biased variance, as torch
export function layernorm_forward(x, w, b, eps = 1e-5) {
  const C = w.length, T = (x.length / C) | 0;
  const out = new Float64Array(T * C);                                    // (T, C)
  for (let t = 0; t < T; t++) {
    const row = t * C;
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[row + c];
    mean /= C;
    let variance = 0;
    for (let c = 0; c < C; c++) variance += (x[row + c] - mean) * (x[row + c] - mean);
    variance /= C;
    const rstd = 1.0 / Math.sqrt(variance + eps);
    for (let c = 0; c < C; c++) out[row + c] = (x[row + c] - mean) * rstd * w[c] + b[c];   // xhat * w + b
  }
  return out;
}

// x (T, Cin), w (Cout, Cin), b (Cout,) or null -> out (T, Cout) = x @ w.T + b
// Nearly all of the model's multiply-adds are here, so the loops are blocked for speed: in a prefill,
// four rows of x meet four rows of w at a time (16 running sums: each number read serves four
// multiply-adds); a lone row (decoding) meets eight rows of w at a time. BLAS sums in yet another order;
// the tests allow for it (parity's float64 tolerance, 2.2e-13 of the logits' scale). Each loop nest is a function of its own, which
// V8 compiles better than one function with both. (Here and below, "| 0" tells V8 that a quotient is a
// whole number, so that the indices computed from it stay integer arithmetic.)
export function linear_forward(x, w, b, Cout) {
  const Cin = (w.length / Cout) | 0, T = (x.length / Cin) | 0;
  const out = new Float64Array(T * Cout);                                 // (T, Cout)
  const T4 = T - T % 4;
  if (T4) linear_rows4(x, w, out, Cin, Cout, T4);                         // rows 0 .. T4-1, four at a time
  for (let t = T4; t < T; t++) linear_row(x, w, out, Cin, Cout, t);       // the last T % 4 rows
  if (b !== null)
    for (let t = 0; t < T; t++)
      for (let o = 0; o < Cout; o++) out[t * Cout + o] += b[o];
  return out;
}

// out[t:t+4, o:o+4] = x[t:t+4] @ w[o:o+4].T for every t, o in steps of 4 (the leftover outputs one by one)
function linear_rows4(x, w, out, Cin, Cout, T4) {
  for (let t = 0; t < T4; t += 4) {
    const x0 = t * Cin, x1 = x0 + Cin, x2 = x1 + Cin, x3 = x2 + Cin;
    const r0 = t * Cout, r1 = r0 + Cout, r2 = r1 + Cout, r3 = r2 + Cout;
    let o = 0;
    for (; o + 4 <= Cout; o += 4) {
      const w0 = o * Cin, w1 = w0 + Cin, w2 = w1 + Cin, w3 = w2 + Cin;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      for (let i = 0; i < Cin; i++) {
        const a = w[w0 + i], b = w[w1 + i], c = w[w2 + i], d = w[w3 + i];
        let p = x[x0 + i]; s00 += p * a; s01 += p * b; s02 += p * c; s03 += p * d;
        p = x[x1 + i]; s10 += p * a; s11 += p * b; s12 += p * c; s13 += p * d;
        p = x[x2 + i]; s20 += p * a; s21 += p * b; s22 += p * c; s23 += p * d;
        p = x[x3 + i]; s30 += p * a; s31 += p * b; s32 += p * c; s33 += p * d;
      }
      out[r0 + o] = s00; out[r0 + o + 1] = s01; out[r0 + o + 2] = s02; out[r0 + o + 3] = s03;
      out[r1 + o] = s10; out[r1 + o + 1] = s11; out[r1 + o + 2] = s12; out[r1 + o + 3] = s13;
      out[r2 + o] = s20; out[r2 + o + 1] = s21; out[r2 + o + 2] = s22; out[r2 + o + 3] = s23;
      out[r3 + o] = s30; out[r3 + o + 1] = s31; out[r3 + o + 2] = s32; out[r3 + o + 3] = s33;
    }
    for (; o < Cout; o++)                                                 // a Cout not divisible by 4
      for (let r = 0; r < 4; r++) out[(t + r) * Cout + o] = dot(x, (t + r) * Cin, w, o * Cin, Cin);
  }
}

// out[t, o:o+8] = x[t] @ w[o:o+8].T for every o in steps of 8, then of 4 (the leftover outputs one by one)
function linear_row(x, w, out, Cin, Cout, t) {
  const xr = t * Cin, r = t * Cout;
  let o = 0;
  for (; o + 8 <= Cout; o += 8) {
    const w0 = o * Cin, w1 = w0 + Cin, w2 = w1 + Cin, w3 = w2 + Cin, w4 = w3 + Cin, w5 = w4 + Cin, w6 = w5 + Cin, w7 = w6 + Cin;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    for (let i = 0; i < Cin; i++) {
      const xi = x[xr + i];
      s0 += xi * w[w0 + i]; s1 += xi * w[w1 + i]; s2 += xi * w[w2 + i]; s3 += xi * w[w3 + i];
      s4 += xi * w[w4 + i]; s5 += xi * w[w5 + i]; s6 += xi * w[w6 + i]; s7 += xi * w[w7 + i];
    }
    out[r + o] = s0; out[r + o + 1] = s1; out[r + o + 2] = s2; out[r + o + 3] = s3;
    out[r + o + 4] = s4; out[r + o + 5] = s5; out[r + o + 6] = s6; out[r + o + 7] = s7;
  }
  for (; o + 4 <= Cout; o += 4) {
    const w0 = o * Cin, w1 = w0 + Cin, w2 = w1 + Cin, w3 = w2 + Cin;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let i = 0; i < Cin; i++) {
      const xi = x[xr + i];
      s0 += xi * w[w0 + i]; s1 += xi * w[w1 + i]; s2 += xi * w[w2 + i]; s3 += xi * w[w3 + i];
    }
    out[r + o] = s0; out[r + o + 1] = s1; out[r + o + 2] = s2; out[r + o + 3] = s3;
  }
  for (; o < Cout; o++) out[r + o] = dot(x, xr, w, o * Cin, Cin);
}

// sum over i < n of a[i0 + i] * b[j0 + i]
function dot(a, i0, b, j0, n) {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[i0 + i] * b[j0 + i];
  return s;
}

// softmax of x[start : start + n], in x's own memory, shifted by the max so exp never overflows -> x
export function softmax_(x, start, n) {
  let max = -Infinity;
  for (let i = start; i < start + n; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = start; i < start + n; i++) sum += (x[i] = Math.exp(x[i] - max));
  for (let i = start; i < start + n; i++) x[i] /= sum;
  return x;
}

// Attention's two small products, for one query: its n scores against the keys, and the sum of the
// values weighted by its n probabilities. Each takes four keys, or four channels, at a time: four running
// sums in flight, where one would wait on each add, each summing in the order one at a time would.

// out[o0 + s] = q[0:D] . k[k0 + s*D : k0 + (s+1)*D] for s < n: the keys are n rows of D from k0
function scores(q, k, k0, n, D, out, o0) {
  let s = 0;
  for (; s + 4 <= n; s += 4) {
    const r0 = k0 + s * D, r1 = r0 + D, r2 = r1 + D, r3 = r2 + D;
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (let d = 0; d < D; d++) {
      const qd = q[d];
      s0 += qd * k[r0 + d]; s1 += qd * k[r1 + d]; s2 += qd * k[r2 + d]; s3 += qd * k[r3 + d];
    }
    out[o0 + s] = s0; out[o0 + s + 1] = s1; out[o0 + s + 2] = s2; out[o0 + s + 3] = s3;
  }
  for (; s < n; s++) out[o0 + s] = dot(q, 0, k, k0 + s * D, D);
}

// out[o0 + d] = sum over s < n of p[p0 + s] * v[v0 + s*D + d], for d < D: the values are n rows of D from v0
function weighted_sum(p, p0, v, v0, n, D, out, o0) {
  let d = 0;
  for (; d + 4 <= D; d += 4) {
    let y0 = 0, y1 = 0, y2 = 0, y3 = 0;
    for (let s = 0; s < n; s++) {
      const ps = p[p0 + s], r = v0 + s * D + d;
      y0 += ps * v[r]; y1 += ps * v[r + 1]; y2 += ps * v[r + 2]; y3 += ps * v[r + 3];
    }
    out[o0 + d] = y0; out[o0 + d + 1] = y1; out[o0 + d + 2] = y2; out[o0 + d + 3] = y3;
  }
  for (; d < D; d++) {
    let sum = 0;
    for (let s = 0; s < n; s++) sum += p[p0 + s] * v[v0 + s * D + d];
    out[o0 + d] = sum;
  }
}

// qkv (T, 3C); i: 0 for q, 1 for k, 2 for v -> that third of qkv with its heads apart, (H, T, D)
export function split_heads(qkv, i, n_head, T) {
  const C = (qkv.length / (3 * T)) | 0, H = n_head, D = (C / H) | 0;
  const out = new Float64Array(H * T * D);                                // (H, T, D)
  for (let h = 0; h < H; h++)
    for (let t = 0; t < T; t++)
      for (let d = 0; d < D; d++) out[(h * T + t) * D + d] = qkv[t * 3 * C + i * C + h * D + d];
  return out;
}

// qkv (T, 3C), the output of c_attn -> {y (T, C), the heads' outputs side by side; q, k, v (H, T, D);
// att (H, T, T), the attention probabilities}. Causal: query t attends to keys 0..t, and att is 0 above
// the diagonal, as softmax makes of numpy_gpt's -inf mask.
export function attention_forward(qkv, n_head, T) {
  const C = (qkv.length / (3 * T)) | 0, H = n_head, D = (C / H) | 0;
  const scale = 1.0 / Math.sqrt(D);
  const q = split_heads(qkv, 0, H, T), k = split_heads(qkv, 1, H, T), v = split_heads(qkv, 2, H, T);   // (H, T, D)
  const att = new Float64Array(H * T * T);                                // (H, T, T)
  const y = new Float64Array(T * C);                                      // (T, C), merge_heads(att @ v)
  const qs = new Float64Array(D);                                         // one query, times scale
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < T; t++) {
      const row = (h * T + t) * T;
      for (let d = 0; d < D; d++) qs[d] = q[(h * T + t) * D + d] * scale;
      scores(qs, k, h * T * D, t + 1, D, att, row);                      // scores = (q * scale) @ k^T
      softmax_(att, row, t + 1);                                          // the row sums to 1
      weighted_sum(att, row, v, h * T * D, t + 1, D, y, t * C + h * D);   // y = att @ v
    }
  }
  return { y, q, k, v, att };
}

// GELU, tanh approximation (numpy_gpt.layers.gelu_forward): x (...) -> out (...)
const GELU_K = Math.sqrt(2.0 / Math.PI);

export function gelu_forward(x) {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const u = GELU_K * (x[i] + 0.044715 * (x[i] * x[i] * x[i]));
    out[i] = 0.5 * x[i] * (1.0 + Math.tanh(u));                           // 0.5 * x * (1 + tanh(u))
  }
  return out;
}

// x (T, C), fx (T, C) -> out (T, C) = x + fx
export function residual_forward(x, fx) {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] + fx[i];
  return out;
}

// ------------------------------------------------------------------------------------------------
// the model (numpy_gpt/model.py), evaluation mode: no dropout

// ids (T,) ints, T <= block_size -> {logits (T, V), one flat Float64Array; att[l][h] (T, T), the
// attention probabilities of head h in layer l; k[l], v[l] (H, T, D), each layer's keys and values}
export function gpt_forward(params, config, ids) {
  const { n_layer: L, n_head: H, n_embd: C, vocab_size: V } = config;
  const T = ids.length;
  const att = [], k = [], v = [];
  let x = embedding_forward(ids, params["wte.weight"], params["wpe.weight"], C);           // (T, C)
  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`;
    // x = x + attn(ln_1(x))
    let h = layernorm_forward(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"]);      // (T, C)
    const qkv = linear_forward(h, params[p + "attn.c_attn.weight"], params[p + "attn.c_attn.bias"], 3 * C);   // (T, 3C)
    const attn = attention_forward(qkv, H, T);                                            // y (T, C)
    const a = linear_forward(attn.y, params[p + "attn.c_proj.weight"], params[p + "attn.c_proj.bias"], C);    // (T, C)
    att.push(Array.from({ length: H }, (_, i) => attn.att.subarray(i * T * T, (i + 1) * T * T)));
    k.push(attn.k);
    v.push(attn.v);
    x = residual_forward(x, a);
    // x = x + mlp(ln_2(x))
    h = layernorm_forward(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"]);          // (T, C)
    const f = linear_forward(h, params[p + "mlp.c_fc.weight"], params[p + "mlp.c_fc.bias"], 4 * C);          // (T, 4C)
    const g = gelu_forward(f);                                                            // (T, 4C)
    const m = linear_forward(g, params[p + "mlp.c_proj.weight"], params[p + "mlp.c_proj.bias"], C);          // (T, C)
    x = residual_forward(x, m);
  }
  const h = layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"]);              // (T, C)
  const logits = linear_forward(h, params["lm_head.weight"], null, V);                     // (T, V)
  return { logits, att, k, v };
}

// ------------------------------------------------------------------------------------------------
// generation: the forward for one new position, with the keys and values of earlier ones cached

// Room for the keys and values of every layer at every position: (L, 2, H, block_size, D), flat
export function new_kv_cache(config) {
  const { n_layer: L, n_head: H, n_embd: C, block_size } = config;
  return new Float64Array(L * 2 * H * block_size * (C / H));
}

// where kv[l, i, h] starts: i is 0 for keys, 1 for values; each is (block_size, D)
function kv_at(config, l, i, h) {
  const { n_head: H, n_embd: C, block_size } = config;
  return ((l * 2 + i) * H + h) * block_size * ((C / H) | 0);
}

// Run the forward over ids (T,), keep its keys and values in kv -> {logits (V,) of the last position,
// att[l][h] (T,) that position's attention}. The next new position is T.
export function gpt_prefill(params, config, ids, kv) {
  return gpt_extend(params, config, ids, 0, kv);
}

// token at position pos; kv holds the keys and values of positions < pos -> {logits (V,), att[l][h]
// (pos+1,)}
export function gpt_decode(params, config, token, pos, kv) {
  return gpt_extend(params, config, [token], pos, kv);
}

// The two above in one: ids (n,) at positions pos0 .. pos0+n-1, where kv holds the keys and values of
// positions < pos0 -> {logits (V,) of the last position, att[l][h] (pos0+n,) its attention}. The same
// layers as gpt_forward. Each layer first adds the new positions' keys and values to kv; then each new
// query attends to every position up to its own, cached or new. The last layer's attention output and
// MLP, and the head, run for the last position only: of the others, a KV cache needs only the keys and
// values. A prefill split in two (positions 0..k-1, then k..T-1) gives the same numbers, bit for bit, as
// one over 0..T-1: every sum runs in the same order.
export function gpt_extend(params, config, ids, pos0, kv) {
  const { n_layer: L, n_head: H, n_embd: C, vocab_size: V } = config;
  const n = ids.length, D = (C / H) | 0, scale = 1.0 / Math.sqrt(D);
  const wte = params["wte.weight"], wpe = params["wpe.weight"];
  let x = new Float64Array(n * C);                                                        // (n, C)
  for (let t = 0; t < n; t++)
    for (let c = 0; c < C; c++) x[t * C + c] = wte[ids[t] * C + c] + wpe[(pos0 + t) * C + c];
  const att = [];
  const qs = new Float64Array(D);                                        // one query, times scale
  const scratch = n > 1 ? new Float64Array(pos0 + n - 1) : null;         // the scores of a query before the last
  for (let l = 0; l < L; l++) {
    const p = `h.${l}.`, from = l === L - 1 ? n - 1 : 0, R = n - from;                   // R rows go on
    let h = layernorm_forward(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"]);      // (n, C)
    const qkv = linear_forward(h, params[p + "attn.c_attn.weight"], params[p + "attn.c_attn.bias"], 3 * C);   // (n, 3C)
    const y = new Float64Array(R * C);                                                    // (R, C)
    att.push([]);
    for (let head = 0; head < H; head++) {
      const keys = kv_at(config, l, 0, head), values = kv_at(config, l, 1, head);         // (block_size, D)
      for (let t = 0; t < n; t++)                                                         // the new k, v
        for (let d = 0; d < D; d++) {
          kv[keys + (pos0 + t) * D + d] = qkv[t * 3 * C + C + head * D + d];
          kv[values + (pos0 + t) * D + d] = qkv[t * 3 * C + 2 * C + head * D + d];
        }
      for (let t = from; t < n; t++) {
        const seen = pos0 + t + 1;                                                        // positions 0..pos0+t
        const a = t === n - 1 ? new Float64Array(seen) : scratch;                         // (seen,)
        for (let d = 0; d < D; d++) qs[d] = qkv[t * 3 * C + head * D + d] * scale;       // this query, times scale
        scores(qs, kv, keys, seen, D, a, 0);                                              // (q * scale) @ keys^T
        softmax_(a, 0, seen);
        weighted_sum(a, 0, kv, values, seen, D, y, (t - from) * C + head * D);            // y = att @ values
        if (t === n - 1) att[l].push(a);
      }
    }
    const a = linear_forward(y, params[p + "attn.c_proj.weight"], params[p + "attn.c_proj.bias"], C);         // (R, C)
    x = residual_forward(x.subarray(from * C), a);                                        // (R, C)
    h = layernorm_forward(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"]);
    const f = linear_forward(h, params[p + "mlp.c_fc.weight"], params[p + "mlp.c_fc.bias"], 4 * C);          // (R, 4C)
    const g = gelu_forward(f);
    const m = linear_forward(g, params[p + "mlp.c_proj.weight"], params[p + "mlp.c_proj.bias"], C);
    x = residual_forward(x, m);
  }
  const h = layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"]);              // (1, C)
  const logits = linear_forward(h, params["lm_head.weight"], null, V);                     // (1, V)
  return { logits, att };
}

// ------------------------------------------------------------------------------------------------
// sampling (numpy_gpt/sampling.py): the same rule and the same numbers, so the same weights, prompt
// and seed (rng.js's default_rng) write the same text as numpy_gpt

// numpy's pairwise summation of a[start : start + n] (pairwise_sum in numpy/_core/src/umath/
// loops_utils.h.src), which np.sum uses for float64 (in one piece up to its 8192-element buffer).
// Summing in numpy's order makes probs.sum(), and so every probability, bit-identical to numpy's.
export function pairwise_sum(a, start, n) {
  if (n < 8) {
    let res = 0.0;
    for (let i = 0; i < n; i++) res += a[start + i];
    return res;
  }
  if (n <= 128) {                                          // PW_BLOCKSIZE: 8 running sums, then the rest
    const r = new Float64Array(8);
    for (let j = 0; j < 8; j++) r[j] = a[start + j];
    let i = 8;
    for (; i < n - (n % 8); i += 8)
      for (let j = 0; j < 8; j++) r[j] += a[start + i + j];
    let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[start + i];
    return res;
  }
  let n2 = Math.floor(n / 2);                              // halve, at a multiple of 8
  n2 -= n2 % 8;
  return pairwise_sum(a, start, n2) + pairwise_sum(a, start + n2, n - n2);
}

// logits (V,) -> the next token id.
// temperature 0 is greedy (argmax, and no random number is drawn). Otherwise one uniform number from
// rng picks a token by inverse CDF over the probabilities kept_tokens leaves.
export function sample_next(logits, rng, temperature = 1.0, top_k = null, top_p = 1.0) {
  if (temperature === 0) {
    let best = 0;                                          // np.argmax: the first maximum
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  const { order, cdf } = kept_tokens(logits, temperature, top_k, top_p);
  const n = cdf.length;
  const u = rng.random() * cdf[n - 1];
  let rank = 0;                                            // searchsorted(cdf, u, side="right")
  while (rank < n && cdf[rank] <= u) rank++;
  return order[Math.min(rank, n - 1)];
}

// logits (V,), temperature > 0 -> {order: token ids, most likely first; cdf (n,): the running sum of
// the probabilities of order's first n tokens, the ones the rule keeps}. The logits are divided by the
// temperature; top_k (null for all) keeps the k most likely tokens (ties go to the lower id); top_p
// keeps the smallest set of most likely tokens whose probability adds up to at least top_p.
// (Math.exp may differ from np.exp in the last bit; that moves an edge of the CDF by ~1e-16 only.)
export function kept_tokens(logits, temperature = 1.0, top_k = null, top_p = 1.0) {
  const V = logits.length;
  // order = argsort(-logits, kind="stable"): most likely first, ties to the lower id
  const order = Array.from({ length: V }, (_, i) => i).sort((i, j) => (logits[j] - logits[i]) || (i - j));
  let n = top_k === null ? V : Math.min(top_k, V);         // ranked[:top_k]
  const first = logits[order[0]] / temperature;            // ranked[0]
  const probs = new Float64Array(n);                       // (n,)
  for (let r = 0; r < n; r++) probs[r] = Math.exp(logits[order[r]] / temperature - first);   // exp(ranked - ranked[0])
  const total = pairwise_sum(probs, 0, n);                 // probs /= probs.sum()
  for (let r = 0; r < n; r++) probs[r] /= total;
  const cdf = new Float64Array(n);                         // cdf = cumsum(probs), left to right
  for (let r = 0, sum = 0; r < n; r++) cdf[r] = sum += probs[r];
  if (top_p < 1.0) {
    let keep = 0;                                          // searchsorted(cdf, top_p): the first rank
    while (keep < n && cdf[keep] < top_p) keep++;          // where the mass reaches top_p
    n = Math.min(keep + 1, n);                             // probs = probs[:keep + 1]
  }
  return { order, cdf: cdf.subarray(0, n) };
}

// how many tokens a slid window restarts with: the last 3/4 of block_size
export const window_keep = (block_size) => Math.max(1, Math.floor(block_size * 3 / 4));

// Yield {token, logits it was drawn from (V,), att[l][h] of the position those logits came from} for
// max_new_tokens new tokens, as numpy_gpt.sampling.generate.
//
// prefill(ids) runs the model over a window of ids (an array), fills the KV cache and returns
// {logits, att} of the last position; decode(token, pos) runs one new position against the cache.
// use_cache=false calls prefill on the whole window for every token instead: the full recompute.
//
// Past block_size the window slides: when a new token does not fit, the window restarts at the last
// window_keep(block_size) tokens, re-primed by one prefill, and caching goes on from there.
export function* generate(prefill, decode, prompt_ids, max_new_tokens, block_size, rng,
                          temperature = 1.0, top_k = null, top_p = 1.0, use_cache = true) {
  const keep = window_keep(block_size);
  const context = Array.from(prompt_ids);
  let start = Math.max(0, context.length - block_size);   // the window is context[start:]
  let out = prefill(context.slice(start));
  for (let i = 0; i < max_new_tokens; i++) {
    const token = sample_next(out.logits, rng, temperature, top_k, top_p);
    yield { token, logits: out.logits, att: out.att };
    context.push(token);
    if (context.length - start > block_size) {             // the new token does not fit: slide the window
      start = context.length - keep;
      out = prefill(context.slice(start));
    } else if (use_cache) {
      out = decode(token, context.length - start - 1);
    } else {
      out = prefill(context.slice(start));
    }
  }
}
