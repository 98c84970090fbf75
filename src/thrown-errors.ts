/**
 * JS errors thrown into Python whose `JSError` is alive and has not read its `js_stack`,
 * kept by slot: the slot travels in the error record, and Python hands it back (as id
 * -1 - slot through the released list) when the text was read or the exception freed.
 * Formatting `error.stack` costs Bun more than the rest of a throw, so it waits here.
 */
export class ThrownErrors {
  private readonly slots: (Error | undefined)[] = [];
  private readonly free: number[] = [];
  /** Errors kept now (for leak tests). */
  live = 0;

  /** Keeps `e`; the slot number goes to Python. */
  keep(e: Error): number {
    const slot = this.free.length !== 0 ? this.free.pop()! : this.slots.length;
    this.slots[slot] = e;
    this.live++;
    return slot;
  }

  get(slot: number): Error | undefined {
    return this.slots[slot];
  }

  release(slot: number): void {
    if (this.slots[slot] === undefined) return;
    this.slots[slot] = undefined;
    this.live--;
    this.free.push(slot);
  }
}
