/**
 * A source graph read once for preparing: its bytes hashed as they are read, so what is prepared and the
 * digest it is filed under are the same bytes (a stat-recorded digest says what the file held when it was
 * last hashed, not what a read returns now).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ModuleIntegrityError, REMEDY } from '../modules/module-dir.js';
import { OnnxFormatError, decodeModel, type ModelProto } from './proto.js';

/** Reads and decodes an ONNX file; `sha256` (hex) is the digest of exactly the bytes decoded. */
export async function readHashedModel(path: string): Promise<{ model: ModelProto; sha256: string }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new OnnxFormatError(code === 'ENOENT' ? `model file not found: ${path}` : `cannot read model file ${path}: ${(err as Error).message}`);
  }
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  return { model: decodeModel(bytes, path), sha256 };
}

/** The error for a source graph whose bytes are not the ones its module manifest lists. */
export function sourceMismatch(path: string, expected: string, actual: string): ModuleIntegrityError {
  return new ModuleIntegrityError(
    `${path} (files.model) has SHA-256 ${actual} but the manifest says ${expected}; the file is corrupt or was changed, so it is not prepared — ${REMEDY}`,
    { file: 'model', path, problem: 'sha256', expected, actual },
  );
}
