/**
 * Execution providers: the `--device` names users pass, mapped onto onnxruntime-node, with a clear error
 * (and the install command) when the provider's binaries are not installed.
 */
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { freemem } from 'node:os';
import { dirname, join } from 'node:path';
import { listSupportedBackends } from 'onnxruntime-node';
import { externalDataLocations } from '../onnx/external-data-locations.js';
import { OnnxFormatError } from '../onnx/format-error.js';
import { processLimit } from './process-limits.js';

/** Devices the engine accepts. */
export const DEVICES = ['cpu', 'cuda', 'tensorrt', 'webgpu', 'coreml', 'dml'] as const;
export type Device = (typeof DEVICES)[number];

/** Raised when a device is unknown or its execution provider is not installed. */
export class DeviceUnavailableError extends Error {
  override name = 'DeviceUnavailableError';
}

// onnxruntime-node's own install script fetches the CUDA 12 provider; npm may have skipped or denied it
// (allowScripts), so the hint runs it directly, which works whatever npm did.
const CUDA_PROVIDER = '`ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js`';
const INSTALL_HINT: Partial<Record<Device, string>> = {
  cuda: `install the CUDA 12 provider with ${CUDA_PROVIDER}, with CUDA 12 and cuDNN 9 on the library path`,
  tensorrt: `install the CUDA 12 provider with ${CUDA_PROVIDER}, and TensorRT 10 on the library path`,
  coreml: 'CoreML ships with onnxruntime-node on macOS only',
  dml: 'DirectML ships with onnxruntime-node on Windows only',
  webgpu: 'WebGPU needs an onnxruntime-node build with the WebGPU provider and a GPU with a Vulkan/Metal/D3D12 driver',
};

/** The binding's directory, where provider shared libraries are installed beside it. */
function bindingDir(): string | undefined {
  try {
    const require = createRequire(import.meta.url);
    const pkg = dirname(require.resolve('onnxruntime-node/package.json'));
    return join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
  } catch {
    return undefined;
  }
}

/**
 * Refuses a name that is none of {@link DEVICES}: a mistake found from the options alone, before any model is pulled
 * or converted (whether the device's provider is installed here is found when a session is made).
 */
export function checkDeviceName(device: string): asserts device is Device {
  if (!(DEVICES as readonly string[]).includes(device)) {
    throw new DeviceUnavailableError(`unknown device "${device}"; expected one of ${DEVICES.join(', ')}`);
  }
}

/** Checks that a device can be used here and returns the onnxruntime execution-provider list for it. */
export function executionProvidersFor(device: string): string[] {
  checkDeviceName(device);
  const d = device;
  if (d === 'cpu') return ['cpu'];
  const backend = listSupportedBackends().find((b) => b.name === d);
  if (!backend) {
    throw new DeviceUnavailableError(
      `device "${d}" is not available in this onnxruntime-node build on ${process.platform}/${process.arch}: ${INSTALL_HINT[d]}`,
    );
  }
  if (!backend.bundled && (d === 'cuda' || d === 'tensorrt')) {
    const dir = bindingDir();
    const lib = d === 'cuda' ? 'libonnxruntime_providers_cuda.so' : 'libonnxruntime_providers_tensorrt.so';
    if (process.platform === 'linux' && dir && !existsSync(join(dir, lib))) {
      throw new DeviceUnavailableError(`device "${d}" needs ${lib}, which is not installed: ${INSTALL_HINT[d]}`);
    }
  }
  // TensorRT falls back to CUDA, then CPU, for the nodes it does not take.
  if (d === 'tensorrt') return ['tensorrt', 'cuda', 'cpu'];
  return [d, 'cpu'];
}

/** Wraps a session-creation failure: on a non-CPU device the same typed, actionable error; on the CPU {@link loadFailure}. */
export function deviceFailure(device: string, err: unknown, model: string): Error {
  if (device === 'cpu') return loadFailure(model, err);
  return new DeviceUnavailableError(
    `could not start device "${device}": ${(err as Error).message}. ${INSTALL_HINT[device as Device] ?? ''}`.trim(),
  );
}

/** Raised when onnxruntime runs out of memory (or of address space, under `ulimit -v`) loading a model: the file is fine. */
export class ModelMemoryError extends Error {
  override name = 'ModelMemoryError';
}

/**
 * onnxruntime's words for an allocation that failed: C++'s std::bad_alloc (what its CPU allocator throws; a session
 * reports "Exception during initialization: std::bad_alloc"), its arena's and allocators' own messages, and
 * strerror(ENOMEM) where mapping a weights file failed.
 */
const OUT_OF_MEMORY = /bad_alloc|Failed to allocate memory|BFC Arena ran out of memory|Memory allocation failed|Failed to allocate external initializer buffer|Cannot allocate memory/;

const size = (bytes: number) => (bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`);

/** The bytes of the model file at `model` and of the external-data files it names; undefined where it cannot be read. */
function bytesOnDisk(model: string): number | undefined {
  try {
    const files = [model, ...externalDataLocations(model).map((location) => join(dirname(model), location))];
    return files.reduce((sum, file) => sum + statSync(file).size, 0);
  } catch {
    return undefined;
  }
}

/**
 * onnxruntime's refusal to load a model on the CPU, naming the model (its own messages name a source line, not the
 * file): a {@link ModelMemoryError} where it ran out of memory (with the model's size and the limit it ran into),
 * else an {@link OnnxFormatError}.
 */
export function loadFailure(model: string, err: unknown): Error {
  if (err instanceof OnnxFormatError) return err;
  const message = (err as Error).message;
  if (OUT_OF_MEMORY.test(message)) {
    const bytes = bytesOnDisk(model);
    const addressSpace = processLimit('Max address space');
    const room = addressSpace === undefined ? `${size(freemem())} of memory is free` : `the process's address space is limited to ${size(addressSpace)} (ulimit -v)`;
    return new ModelMemoryError(
      `not enough memory to load ${model}${bytes === undefined ? '' : ` (${size(bytes)} on disk)`}: onnxruntime failed to allocate memory for it (${message}); ${room}`,
      { cause: err },
    );
  }
  return new OnnxFormatError(`onnxruntime could not load ${model}: ${message}`, { cause: err });
}
