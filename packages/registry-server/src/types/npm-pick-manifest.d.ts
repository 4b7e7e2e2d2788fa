// npm-pick-manifest ships no types; this covers the one call the resolver makes.
declare module 'npm-pick-manifest' {
  interface Packument<M> {
    name: string;
    versions: Record<string, M>;
    'dist-tags': Record<string, string>;
  }
  export default function pickManifest<M extends { version: string }>(packument: Packument<M>, wanted: string, opts?: object): M;
}
