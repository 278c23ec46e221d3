/**
 * Lookups by a name that came from a request or a manifest. `name in record` and `record[name]`
 * also find what every object inherits (`toString`, `constructor`, `__proto__`), so a domain
 * called "toString" would select a function; these only see the record's own entries.
 */
export function hasOwn(record: object, name: string): boolean {
  return Object.hasOwn(record, name);
}

/** `record[name]` if `name` is one of the record's own entries, else `undefined`. */
export function ownEntry<T>(record: Readonly<Record<string, T>>, name: string): T | undefined {
  return hasOwn(record, name) ? record[name] : undefined;
}

/**
 * An empty record without a prototype, for maps keyed by names from a manifest: even code that
 * does use `in` or indexing on it cannot reach `Object.prototype`.
 */
export function ownRecord<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

/** A name quoted for a message, cut to `max` characters (names come from untrusted input). */
export function quoteName(name: string, max = 80): string {
  return JSON.stringify(name.length > max ? `${name.slice(0, max)}…` : name);
}
