/** A vector scaled to unit Euclidean length (a zero vector stays zero): how embeddings are compared by cosine. */
export function unitLength(v: Float32Array): Float32Array {
  let sum = 0;
  for (const x of v) sum += x * x;
  const norm = Math.sqrt(sum);
  return norm > 0 ? v.map((x) => x / norm) : v;
}
