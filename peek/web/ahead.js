// The playground's second core: a Web Worker primes the next window while the tab writes this one.
//
// Past block_size, numpy_gpt's rule slides the window every block_size + 1 - keep tokens and re-primes
// the new window with one prefill of keep tokens (kid.js's generate): for the kid, 64% of the
// arithmetic of 500 characters (python -m benchmarks.site). But the new window's first tokens are
// known long before the slide: it starts `skip` tokens into the current one, so once the current
// window holds keep tokens, its tokens skip..keep-1 are the next window's first ones. The worker
// prefills those while the tab decodes the rest of the current window; at the slide the tab takes the
// worker's KV cache and runs only the new window's last positions on top of it (gpt_extend). A prefill
// split that way gives the same numbers, bit for bit, so the text is the same as without the worker;
// it only comes sooner. The same file is the worker's script (the first block) and the tab's module
// (the rest).
//
// No SharedArrayBuffer: it needs cross-origin isolation headers, which a plain static host may not
// send. A KV cache crosses between the two by transfer, which moves its memory without a copy.

import { gpt_decode, gpt_extend, gpt_prefill, load_weights, new_kv_cache, window_keep } from "./kid.js";

// the worker: {manifest, buffer} loads the kid (peek/weights.py's files); {job, ids} prefills ids into a
// new KV cache and answers {job, kv}
if (typeof WorkerGlobalScope !== "undefined" && self instanceof WorkerGlobalScope) {
  let kid = null;
  self.onmessage = ({ data }) => {
    if (data.manifest) {
      kid = load_weights(data.manifest, data.buffer);
      return;
    }
    const kv = new_kv_cache(kid.config);
    gpt_prefill(kid.params, kid.config, data.ids, kv);
    self.postMessage({ job: data.job, kv }, [kv.buffer]);
  };
}

// The tab's handle on the worker. prime(ids) -> a job {ids, kv: null until the worker is done, done: a
// promise that settles then}. A worker that fails leaves its jobs' kv null, and the tab prefills as if
// there were no worker.
export class Lookahead {
  constructor(manifest, buffer) {
    this.worker = new Worker(new URL("./ahead.js", import.meta.url), { type: "module" });
    this.worker.postMessage({ manifest, buffer });             // a copy: the tab keeps its own
    this.jobs = new Map();                                     // job number -> job, while the worker has it
    this.count = 0;
    this.broken = false;
    this.worker.onmessage = ({ data }) => this.finish(data.job, data.kv);
    this.worker.onerror = (e) => {
      e.preventDefault();
      this.broken = true;
      for (const job of [...this.jobs.keys()]) this.finish(job, null);
    };
  }

  prime(ids) {
    const job = { ids, kv: null };
    job.done = new Promise((resolve) => { job.resolve = resolve; });
    if (this.broken) {
      job.resolve();
      return job;
    }
    this.jobs.set(++this.count, job);
    this.worker.postMessage({ job: this.count, ids });
    return job;
  }

  finish(number, kv) {
    const job = this.jobs.get(number);
    if (!job) return;
    this.jobs.delete(number);
    job.kv = kv;
    job.resolve();
  }
}

// One run's model calls for generate, with the KV cache and the worker's help: {prefill, decode,
// before_next() -> a promise to await before the stream's next step, or null; windows: how many
// windows were primed, and how many of them by the worker}. ahead null: no worker, plain prefills.
export function cached_run(kid, ahead) {
  const { params, config } = kid, B = config.block_size, keep = window_keep(B);
  const skip = B + 1 - keep;                     // the next window is this one's tokens skip..B
  let kv = new_kv_cache(config), window = [], job = null;
  const windows = { primed: 0, ahead: 0 };
  const start_job = () => {                      // once this window's tokens skip..keep-1 are known
    if (ahead && job === null && window.length >= keep && window.length > skip)
      job = ahead.prime(window.slice(skip));
  };
  return {
    windows,
    prefill(ids) {
      const n = job && job.kv ? job.ids.length : 0;
      let out;
      if (n > 0 && n < ids.length && job.ids.every((t, i) => t === ids[i])) {
        kv = job.kv;                             // positions 0..n-1, from the worker
        out = gpt_extend(params, config, ids.slice(n), n, kv);
        windows.ahead++;
      } else {
        out = gpt_prefill(params, config, ids, kv);
      }
      windows.primed++;
      window = Array.from(ids);
      job = null;
      start_job();
      return out;
    },
    decode(token, pos) {
      const out = gpt_decode(params, config, token, pos, kv);
      window.push(token);
      start_job();
      return out;
    },
    // the window is full, so the next step slides it: wait for the worker's part if it is not back yet
    before_next: () => (window.length === B && job && !job.kv ? job.done : null),
  };
}
