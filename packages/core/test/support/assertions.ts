/** Small assertion helpers shared by the core tests. */

/** Resolves to the error a promise rejects with; fails when it fulfils or rejects with a non-Error. */
export async function rejection(p: Promise<unknown>): Promise<Error> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof Error)) throw new Error('expected the promise to reject');
  return err;
}

/** The error `fn` throws; fails when it returns or throws a non-Error. */
export function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    if (err instanceof Error) return err;
  }
  throw new Error('expected the call to throw an Error');
}
