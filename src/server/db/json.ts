// JSON columns: stored as text (SQLite and PostgreSQL agree on text), typed by what they hold.
//
// A column declared `Json<T>` only accepts a value made by `encode(t: T)`, and `decode` gives back a `T`, so
// the compiler checks both directions and no call site needs a cast. Usage in a table module:
//
//   export interface ReleaseTable { artifacts: Json<Artifact[]>; … }
//   await db.insertInto('releases').values({ artifacts: encode(artifacts), … })
//   const artifacts = decode(row.artifacts);            // Artifact[]
//
// The brand exists only for the compiler; at run time a `Json<T>` is the plain JSON text.

declare const json: unique symbol;

/** JSON text known to encode a `T` (a branded string: plain text at run time). */
export type Json<T> = string & { readonly [json]: T };

/** Encodes a value for a `Json<T>` column. */
export function encode<T>(value: T): Json<T> {
  // The one place the brand is applied: JSON.stringify of a T is, by construction, JSON of a T.
  return JSON.stringify(value) as Json<T>;
}

/** Decodes a `Json<T>` column back to its value. */
export function decode<T>(text: Json<T>): T {
  return JSON.parse(text);
}
