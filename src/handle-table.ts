/**
 * The proxy identity table of the main interpreter (main-interpreter.ts).
 *
 * Open-addressing hash table keyed by handles (PyObject addresses as numbers): linear
 * probing with backward-shift deletion, so there are no tombstones and every operation
 * costs the same whatever the number of live entries or the churn.
 */
export class HandleTable<V> {
  private keys = new Float64Array(1024);
  private values: (V | undefined)[] = new Array(1024).fill(undefined);
  private mask = 1023;
  size = 0;

  private slot(key: number): number {
    // objects are 16-byte aligned: skip the low bits, mix the rest (Fibonacci hashing)
    return (Math.imul((key / 16) >>> 0, 0x9e3779b1) >>> 0) & this.mask;
  }

  get(key: number): V | undefined {
    const keys = this.keys, mask = this.mask;
    for (let i = this.slot(key); ; i = (i + 1) & mask) {
      const k = keys[i]!;
      if (k === key) return this.values[i];
      if (k === 0) return undefined;
    }
  }

  set(key: number, value: V): void {
    const keys = this.keys, mask = this.mask;
    let i = this.slot(key);
    for (; ; i = (i + 1) & mask) {
      const k = keys[i]!;
      if (k === key) {
        this.values[i] = value;
        return;
      }
      if (k === 0) break;
    }
    keys[i] = key;
    this.values[i] = value;
    if (++this.size * 2 > mask) this.resize((mask + 1) * 2);
  }

  delete(key: number): void {
    const keys = this.keys, values = this.values, mask = this.mask;
    let i = this.slot(key);
    for (; ; i = (i + 1) & mask) {
      const k = keys[i]!;
      if (k === key) break;
      if (k === 0) return;
    }
    // backward-shift: move later entries of the probe run into the hole
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const k = keys[j]!;
      if (k === 0) break;
      const home = this.slot(k);
      // k may fill the hole at i when its home is not in (i, j] (cyclically)
      if (i <= j ? home <= i || home > j : home <= i && home > j) {
        keys[i] = k;
        values[i] = values[j];
        i = j;
      }
    }
    keys[i] = 0;
    values[i] = undefined;
    this.size--;
    if (mask > 1023 && this.size * 8 < mask) this.resize((mask + 1) / 2);
  }

  private resize(capacity: number): void {
    const oldKeys = this.keys, oldValues = this.values;
    this.keys = new Float64Array(capacity);
    this.values = new Array(capacity).fill(undefined);
    this.mask = capacity - 1;
    this.size = 0;
    for (let i = 0; i < oldKeys.length; i++) {
      const k = oldKeys[i]!;
      if (k !== 0) this.set(k, oldValues[i]!);
    }
  }
}
