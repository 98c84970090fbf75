/**
 * What Object.prototype can do to the plain objects the codec reads and writes: an
 * enumerable property added to it shows up in every for-in, and a frozen or accessor
 * property on it changes what `o[k] = v` does.
 */

/** True while nothing enumerable was added to Object.prototype (for-in over a plain object
    would visit it too). Checked per object: a getter could add one mid-message. */
export function prototypeIsClean(): boolean {
  for (const _ in Object.prototype) return false;
  return true;
}

/** `o[k] = v` as an own data property (as JSON.parse makes), whatever Object.prototype has. */
export function ownProperty(o: object, k: string, v: unknown): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}
