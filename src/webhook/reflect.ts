/**
 * The part of the Reflect metadata API that tsyringe checks for when it loads. @peculiar/x509
 * registers its algorithms in a tsyringe container, and tsyringe refuses to load without
 * `Reflect.getMetadata`. x509 emits no decorator metadata, so an in-memory store is all it needs;
 * a real polyfill (reflect-metadata), if something loaded one first, is left alone.
 * Import this module before @peculiar/x509.
 */
type Store = WeakMap<object, Map<unknown, unknown>>;
interface ReflectMetadata {
  getMetadata?: (key: unknown, target: object) => unknown;
  getOwnMetadata?: (key: unknown, target: object) => unknown;
  defineMetadata?: (key: unknown, value: unknown, target: object) => void;
  hasMetadata?: (key: unknown, target: object) => boolean;
}

const R = Reflect as unknown as ReflectMetadata;
if (typeof R.getMetadata !== "function") {
  const store: Store = new WeakMap();
  const own = (target: object): Map<unknown, unknown> | undefined => store.get(target);
  R.getOwnMetadata = (key, target) => own(target)?.get(key);
  R.getMetadata = (key, target) => {
    for (let t: object | null = target; t !== null; t = Object.getPrototypeOf(t) as object | null) {
      const m = own(t);
      if (m?.has(key)) return m.get(key);
    }
    return undefined;
  };
  R.hasMetadata = (key, target) => R.getMetadata?.(key, target) !== undefined;
  R.defineMetadata = (key, value, target) => {
    let m = own(target);
    if (!m) store.set(target, (m = new Map()));
    m.set(key, value);
  };
}
