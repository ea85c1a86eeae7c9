// The model-size calculator: what a GPT of a given shape costs, as pure functions with no dependencies.
//
// Shape key: V vocab_size, T block_size (context), C n_embd (width), L n_layer, H n_head, B batch size.
//
// The architecture is the kid's (numpy_gpt.model.param_shapes): token and position embeddings, L blocks
// of LayerNorm, attention (one c_attn of 3C x C and a c_proj of C x C, both with biases), LayerNorm and an
// MLP (C -> 4C -> C, with biases), then a final LayerNorm and an untied head (V x C, no bias). H does not
// change any count: the heads split C between them.

// The kid, and nanoGPT's shakespeare_char model (its config/train_shakespeare_char.py) in the kid's
// architecture: with its head untied from wte, as the kid has it.
export const KID = { vocab_size: 65, block_size: 128, n_layer: 4, n_head: 4, n_embd: 128 };
export const NANOGPT_SHAKESPEARE_CHAR = { vocab_size: 65, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384 };

// config -> the parameters, by part:
//   embeddings  wte (V, C) + wpe (T, C)
//   attention   per block: c_attn (3C, C) + (3C,), c_proj (C, C) + (C,)             = 4C^2 + 4C
//   mlp         per block: c_fc (4C, C) + (4C,), c_proj (C, 4C) + (C,)             = 8C^2 + 5C
//   layernorm   per block: ln_1 and ln_2, a weight and a bias of C each (4C); ln_f (2C)
//   head        lm_head (V, C)
export function param_counts({ vocab_size: V, block_size: T, n_layer: L, n_embd: C }) {
  const embeddings = V * C + T * C;
  const attention = L * (4 * C * C + 4 * C);
  const mlp = L * (8 * C * C + 5 * C);
  const layernorm = L * 4 * C + 2 * C;
  const head = V * C;
  return { total: embeddings + attention + mlp + layernorm + head, embeddings, attention, mlp, layernorm, head };
}

// The weights that take part in a matrix product: every one but the embeddings (looked up, not
// multiplied), the biases and the LayerNorms: 12 C^2 per block (c_attn 3C^2, c_proj C^2, c_fc 4C^2,
// mlp.c_proj 4C^2) and the head's V C.
export function matmul_weights({ vocab_size: V, n_layer: L, n_embd: C }) {
  return L * 12 * C * C + V * C;
}

// config, B -> the floating-point operations of one training step on B sequences of T characters
// (forward and backward), counting the matrix products only: a product of (M, K) and (K, N) costs
// 2 M K N (a multiply and an add for each of M N K terms).
//   weights    Each of the B T positions multiplies every matmul weight once forward: 2 N per position,
//              N = matmul_weights. The backward multiplies twice as much: the gradient of the input
//              (dout @ w) and of the weight (dout^T @ x), one product each. So 6 N B T.
//   attention  Per block and head forward, the scores q @ k^T ((T, D) by (D, T)) and the weighted sum
//              att @ v ((T, T) by (T, D)) cost 2 T^2 D each; over H heads (H D = C) that is 4 T^2 C.
//              The backward has two products for each (datt and dv, dq and dk): 8 T^2 C. So 12 L B T^2 C.
//              The whole T x T square is multiplied (the causal mask zeroes the upper half afterwards),
//              as numpy_gpt and torch's explicit attention do.
// Left out: the elementwise work (LayerNorm, GELU, softmax, the residual adds, AdamW's update), a few
// operations per number, small beside the products for any width past a few dozen.
export function step_flops(config, batch_size) {
  const { block_size: T, n_layer: L, n_embd: C } = config;
  const B = batch_size;
  const weights = 6 * matmul_weights(config) * B * T;
  const attention = 12 * L * B * T * T * C;
  return { total: weights + attention, weights, attention };
}

// config -> bytes of float32 (4 bytes a number) that training holds besides the activations:
//   weights    the parameters
//   gradients  one gradient per parameter
//   adam       AdamW's two moments per parameter (m, the running mean of the gradient, and v, of its square)
export function memory_bytes(config) {
  const P = param_counts(config).total;
  const weights = 4 * P, gradients = 4 * P, adam = 8 * P;
  return { total: weights + gradients + adam, weights, gradients, adam };
}

// An estimate of the seconds `steps` training steps of config take, from a measured run of the kid
// (kid_config) that took kid_seconds for kid_steps steps, on the same machine and at the same batch size:
// the kid's rate of FLOPs (step_flops) times the ratio of the work. The batch size cancels out of the
// ratio. Real rates vary with the shape (small products use a machine less well than large ones), so
// this is the time at the kid's rate, not a promise.
export function train_time_estimate(config, kid_config, kid_seconds, steps, kid_steps = steps) {
  const work = steps * step_flops(config, 1).total;
  const kid_work = kid_steps * step_flops(kid_config, 1).total;
  return kid_seconds * work / kid_work;
}
