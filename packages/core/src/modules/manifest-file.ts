/** File name of the manifest inside a module directory (apart from the schema: model workers name it without loading zod). */
export const MANIFEST_FILE = 'reasonplug.json';
