// A binary min-heap of (time, payload) in typed arrays: a million pending device events without a million objects.
// Ties are broken by insertion order, so the simulation does not depend on heap internals.

export class EventQueue {
  private times = new Float64Array(1024);
  private seqs = new Float64Array(1024);
  private payloads = new Int32Array(1024);
  private n = 0;
  private seq = 0;

  get size(): number {
    return this.n;
  }

  /** Time of the earliest event, or Infinity when empty. */
  peekTime(): number {
    return this.n > 0 ? this.times[0] : Number.POSITIVE_INFINITY;
  }

  push(time: number, payload: number): void {
    if (this.n === this.times.length) this.grow();
    let i = this.n++;
    const s = this.seq++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.before(this.times[p], this.seqs[p], time, s)) break;
      this.times[i] = this.times[p];
      this.seqs[i] = this.seqs[p];
      this.payloads[i] = this.payloads[p];
      i = p;
    }
    this.times[i] = time;
    this.seqs[i] = s;
    this.payloads[i] = payload;
  }

  /** Removes the earliest event and returns its payload (call only when size > 0). */
  pop(): number {
    const top = this.payloads[0];
    const last = --this.n;
    if (last > 0) {
      const t = this.times[last];
      const s = this.seqs[last];
      const p = this.payloads[last];
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= last) break;
        const r = l + 1;
        const c = r < last && this.before(this.times[r], this.seqs[r], this.times[l], this.seqs[l]) ? r : l;
        if (this.before(t, s, this.times[c], this.seqs[c])) break;
        this.times[i] = this.times[c];
        this.seqs[i] = this.seqs[c];
        this.payloads[i] = this.payloads[c];
        i = c;
      }
      this.times[i] = t;
      this.seqs[i] = s;
      this.payloads[i] = p;
    }
    return top;
  }

  private before(t1: number, s1: number, t2: number, s2: number): boolean {
    return t1 < t2 || (t1 === t2 && s1 < s2);
  }

  private grow(): void {
    const size = this.times.length * 2;
    const t = new Float64Array(size);
    t.set(this.times);
    this.times = t;
    const s = new Float64Array(size);
    s.set(this.seqs);
    this.seqs = s;
    const p = new Int32Array(size);
    p.set(this.payloads);
    this.payloads = p;
  }
}
