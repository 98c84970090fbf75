/**
 * The JS decoder's memo of short ASCII strings (dict keys, enum-like values: they repeat
 * call after call), per JS thread: strings are immutable, so sharing one is safe. The
 * sender picks the slot (BP_T_ASCII_MEMO: Python's cached str hash), so a hit costs one
 * compare of the bytes, with no hashing, no native call and no allocation. Two-way: the
 * slot the hint picks and its neighbour, so two strings whose hints collide (Python's str
 * hash is random per process) do not evict each other at every call.
 */

const SLOTS = 1024;
/** The longest memoised string: BP_ASCII_MEMO_MAX in shim/bunpy.h. */
export const MEMO_MAX_LENGTH = 24;
const memo: string[] = new Array<string>(SLOTS).fill("");

function holds(known: string, u8: Uint8Array, start: number, n: number): boolean {
  if (known.length !== n) return false;
  let i = 0;
  while (i < n && known.charCodeAt(i) === u8[start + i]) i++;
  return i === n;
}

/** The n ASCII bytes at u8[start] as a string, from the memo when `hint`'s slot holds it. */
export function memoText(u8: Uint8Array, text: Buffer, start: number, n: number, hint: number): string {
  const slot = hint & (SLOTS - 1);
  const first = memo[slot]!;
  if (holds(first, u8, start, n)) return first;
  const second = memo[slot ^ 1]!;
  if (holds(second, u8, start, n)) return second;
  const fresh = text.latin1Slice(start, start + n);
  memo[slot ^ 1] = first; // the newest in the slot, the one before next to it
  memo[slot] = fresh;
  return fresh;
}
