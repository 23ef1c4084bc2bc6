// Where a release artifact sits in the organisation's signed targets: the one naming both the signer (which
// lists it) and the device verifier (which looks it up) use.

/** The path of a release artifact inside the organisation's targets. */
export function targetPath(component: string, version: string, name: string): string {
  return `${component}/${version}/${name}`;
}
