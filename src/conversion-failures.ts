/**
 * How a value that cannot cross to Python is reported: the path of the failing value inside
 * the message (`args[0].a[3]`), containers changed while they were read, Proxies of exotic
 * objects, strings that are not well-formed Unicode. Used by the encoder in codec.ts; only
 * failure paths come here.
 */
import { ConversionError } from "./errors.ts";

/** Adds a path segment to an error travelling out of a container. A ConversionError gets
    it in its path; anything else (an exception thrown by a getter or Proxy trap) goes on
    unchanged and carries the path in a `bunpyPath` property when it is an object. */
export function within(e: unknown, segment: string): unknown {
  if (e instanceof ConversionError && !finished.has(e)) return e.within(segment);
  if (typeof e === "object" && e !== null) {
    try {
      const inner = (e as { bunpyPath?: unknown }).bunpyPath;
      const path = typeof inner === "string" ? segment + (inner.startsWith("[") || inner === "" ? "" : ".") + inner : segment;
      Object.defineProperty(e, "bunpyPath", { value: path, configurable: true, writable: true, enumerable: false });
    } catch {
      // a frozen or exotic object: it goes on without the path
    }
  }
  return e;
}

/** ConversionErrors whose path is complete: thrown by a call a getter made, they cross
    the outer conversion like any other exception (their path is not the outer one). */
const finished = new WeakSet<ConversionError>();

export function finish(e: unknown): unknown {
  if (e instanceof ConversionError) finished.add(e);
  return e;
}

/** A container whose size changed while it was read (a getter or Proxy trap changed it). */
export function changed(what: string, before: number, after: number): ConversionError {
  return new ConversionError(
    `the ${what} changed while it was converted (${before} entries when it was first read, ${after} after); ` +
      "nothing was sent to Python",
  );
}

/** How a Map key appears in a path: `[2]`, `[a]`, or `[key 3]` for other keys. */
export function keySegment(k: unknown, index: number): string {
  switch (typeof k) {
    case "number":
    case "boolean":
    case "bigint":
      return `[${String(k)}]`;
    case "string":
      return `[${k.length > 40 ? `${k.slice(0, 40)}…` : k}]`;
    default:
      return k === null || k === undefined ? `[${String(k)}]` : `[key ${index}]`;
  }
}

export function behindProxy(v: object): ConversionError {
  return new ConversionError(
    `cannot convert a Proxy of ${describe(v)} to Python: only arrays and plain objects can be read through a Proxy`,
  );
}

export function describe(v: unknown): string {
  if (v === null) return "null";
  if (typeof v !== "object") return `a ${typeof v}`;
  const name = (v as object).constructor?.name;
  return name ? `an instance of ${name}` : "an object with a custom prototype";
}

export function loneSurrogate(s: string): ConversionError {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++;
        continue;
      }
    }
    if (c >= 0xd800 && c <= 0xdfff)
      return new ConversionError(
        `string has a lone surrogate (\\u${c.toString(16)} at index ${i}); only well-formed Unicode can become a Python str`,
      );
  }
  return new ConversionError("string is not well-formed Unicode");
}

