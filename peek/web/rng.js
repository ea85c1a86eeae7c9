// numpy.random.default_rng(seed).random() and .integers(low, high, size), bit for bit, so a page and
// numpy_gpt draw the same numbers.
//
//   seed -> SeedSequence (numpy/random/bit_generator.pyx) -> 4 uint64 words -> PCG64 (numpy/random/src/pcg64/)
//
// The 32-bit hashing of SeedSequence uses Math.imul and >>> 0; PCG64's 128-bit arithmetic uses BigInt.
// tests/test_peek_js.py (random) and tests/test_train_js.py (integers) check the numbers against numpy itself.

const MASK32 = 0xffffffff;
const MASK64 = (1n << 64n) - 1n;
const MASK128 = (1n << 128n) - 1n;

// ------------------------------------------------------------------------------------------------
// SeedSequence (bit_generator.pyx): the seed's entropy hashed into a pool of 4 uint32 words

const POOL_SIZE = 4;
const INIT_A = 0x43b0d7e5, MULT_A = 0x931e8875, INIT_B = 0x8b51f9dd, MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd, MIX_MULT_R = 0x4973f715, XSHIFT = 16;

// _int_to_uint32_array: a non-negative integer as uint32 words, least significant first; 0 is [0]
function int_to_uint32_array(seed) {
  let n = BigInt(seed);
  const words = [];
  do {
    words.push(Number(n & 0xffffffffn));
    n >>= 32n;
  } while (n > 0n);
  return words;
}

// hashmix: hash one word; hash_const is a one-element array that every call advances
function hashmix(value, hash_const) {
  value = (value ^ hash_const[0]) >>> 0;
  hash_const[0] = Math.imul(hash_const[0], MULT_A) >>> 0;
  value = Math.imul(value, hash_const[0]) >>> 0;
  return (value ^ (value >>> XSHIFT)) >>> 0;
}

// mix: combine two hashed words
function mix(x, y) {
  const result = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0;
  return (result ^ (result >>> XSHIFT)) >>> 0;
}

// SeedSequence.mix_entropy: the pool (POOL_SIZE uint32 words) from the entropy words.
// With no spawn_key, get_assembled_entropy is the seed's words themselves.
function mix_entropy(entropy) {
  const hash_const = [INIT_A];
  const mixer = new Array(POOL_SIZE);
  for (let i = 0; i < POOL_SIZE; i++) mixer[i] = hashmix(i < entropy.length ? entropy[i] : 0, hash_const);
  for (let i_src = 0; i_src < POOL_SIZE; i_src++)
    for (let i_dst = 0; i_dst < POOL_SIZE; i_dst++)
      if (i_src !== i_dst) mixer[i_dst] = mix(mixer[i_dst], hashmix(mixer[i_src], hash_const));
  for (let i_src = POOL_SIZE; i_src < entropy.length; i_src++)     // entropy longer than the pool
    for (let i_dst = 0; i_dst < POOL_SIZE; i_dst++)
      mixer[i_dst] = mix(mixer[i_dst], hashmix(entropy[i_src], hash_const));
  return mixer;
}

// SeedSequence.generate_state(n_words, np.uint64): 2 * n_words uint32 words drawn from the pool,
// read as little-endian uint64 pairs (word 2i is the low half) -> n_words BigInts
export function generate_state(pool, n_words) {
  let hash_const = INIT_B;
  const state = [];
  for (let i_dst = 0; i_dst < 2 * n_words; i_dst++) {
    let data_val = (pool[i_dst % POOL_SIZE] ^ hash_const) >>> 0;
    hash_const = Math.imul(hash_const, MULT_B) >>> 0;
    data_val = Math.imul(data_val, hash_const) >>> 0;
    state.push((data_val ^ (data_val >>> XSHIFT)) >>> 0);
  }
  const out = [];
  for (let i = 0; i < n_words; i++) out.push(BigInt(state[2 * i]) | (BigInt(state[2 * i + 1]) << 32n));
  return out;
}

// SeedSequence(seed).pool. seed: an integer, or an array of them, as numpy_gpt.data.stream's keys
// [seed, tag, ...]: _coerce_to_uint32_array turns each into its words and joins them, in order.
export function seed_sequence_pool(seed) {
  const words = Array.isArray(seed) ? seed.flatMap(int_to_uint32_array) : int_to_uint32_array(seed);
  return mix_entropy(words);
}

// ------------------------------------------------------------------------------------------------
// PCG64 (pcg64.h): a 128-bit LCG whose output is XSL-RR of the state

const PCG_DEFAULT_MULTIPLIER_128 = (2549297995355413924n << 64n) + 4865540595714422341n;

// pcg_setseq_128_step_r: state = state * mult + inc (mod 2^128)
function step(rng) {
  rng.state = (rng.state * PCG_DEFAULT_MULTIPLIER_128 + rng.inc) & MASK128;
}

// pcg_output_xsl_rr_128_64: xor the two halves, rotate right by the top 6 bits
function output_xsl_rr(state) {
  const rot = state >> 122n;
  const x = ((state >> 64n) ^ state) & MASK64;
  return ((x >> rot) | (x << ((64n - rot) & 63n))) & MASK64;
}

// pcg64_set_seed + pcg_setseq_128_srandom_r. PCG_128BIT_CONSTANT(high, low): word 0 is the high half.
function pcg64_seeded(words) {
  const initstate = (words[0] << 64n) | words[1];
  const initseq = (words[2] << 64n) | words[3];
  const rng = { state: 0n, inc: ((initseq << 1n) | 1n) & MASK128 };
  step(rng);
  rng.state = (rng.state + initstate) & MASK128;
  step(rng);
  return rng;
}

// ------------------------------------------------------------------------------------------------
// numpy.random.default_rng(seed): Generator(PCG64(SeedSequence(seed)))

// seed: a non-negative integer, a Number (a safe integer) or a BigInt, or an array of them
// -> { next_uint64() -> BigInt in [0, 2^64), next_uint32() -> Number in [0, 2^32), random() -> Number in
//      [0, 1), integers(low, high, size) -> Float64Array of size whole numbers in [low, high) }
export function default_rng(seed) {
  const bad = (s) => !(typeof s === "bigint" || Number.isSafeInteger(s)) || s < 0;
  if (Array.isArray(seed) ? seed.length === 0 || seed.some(bad) : bad(seed))
    throw new Error(`the seed must be a non-negative integer or a list of them, got ${String(seed)}`);
  const pcg = pcg64_seeded(generate_state(seed_sequence_pool(seed), 4));   // PCG64.__init__
  let has_uint32 = false, uinteger = 0;                                    // the half of a uint64 not yet used
  return {
    // pcg64_random_r: step, then output the new state
    next_uint64() {
      step(pcg);
      return output_xsl_rr(pcg.state);
    },
    // pcg64_next32: the low half of a new uint64, then its high half on the next call
    next_uint32() {
      if (has_uint32) {
        has_uint32 = false;
        return uinteger;
      }
      const next = this.next_uint64();
      has_uint32 = true;
      uinteger = Number(next >> 32n);
      return Number(next & 0xffffffffn);
    },
    // next_double (distributions.h): the top 53 bits, times 2^-53
    random() {
      return Number(this.next_uint64() >> 11n) * (1.0 / 9007199254740992.0);
    },
    // Generator.integers(low, high, size) for the default int64, high exclusive: _rand_int64 ->
    // random_bounded_uint64_fill (distributions.c), for ranges that fit 32 bits (high - low <= 2^32),
    // which is every range a page draws from. Each number is low + a bounded uint32 by Lemire's method.
    integers(low, high, size) {
      if (!Number.isSafeInteger(low) || !Number.isSafeInteger(high) || high <= low || high - low > 2 ** 32)
        throw new Error(`integers(low, high) needs whole numbers with 0 < high - low <= 2^32, got ${low}, ${high}`);
      const rng = high - low - 1;                                          // the largest offset
      const out = new Float64Array(size);
      for (let i = 0; i < size; i++)
        out[i] = low + (rng === 0 ? 0 : rng === MASK32 ? this.next_uint32() : this.bounded_lemire_uint32(rng));
      return out;
    },
    // buffered_bounded_lemire_uint32 (Lemire, arXiv:1805.10941): a uniform whole number in [0, rng], by
    // the top 32 bits of a uint32 times rng + 1, drawing again while the low 32 bits fall in the biased
    // zone. The product can pass 2^53, so it is BigInt.
    bounded_lemire_uint32(rng) {
      const rng_excl = BigInt(rng + 1);
      let m = BigInt(this.next_uint32()) * rng_excl;
      let leftover = m & 0xffffffffn;
      if (leftover < rng_excl) {
        const threshold = BigInt((MASK32 - rng) % (rng + 1));             // (UINT32_MAX - rng) % rng_excl
        while (leftover < threshold) {
          m = BigInt(this.next_uint32()) * rng_excl;
          leftover = m & 0xffffffffn;
        }
      }
      return Number(m >> 32n);
    },
  };
}
