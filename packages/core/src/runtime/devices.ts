/**
 * Execution providers: the `--device` names users pass, mapped onto onnxruntime-node, with a clear error
 * (and the install command) when the provider's binaries are not installed.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { listSupportedBackends } from 'onnxruntime-node';
import { OnnxFormatError } from '../onnx/format-error.js';

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

/** Checks that a device can be used here and returns the onnxruntime execution-provider list for it. */
export function executionProvidersFor(device: string): string[] {
  if (!(DEVICES as readonly string[]).includes(device)) {
    throw new DeviceUnavailableError(`unknown device "${device}"; expected one of ${DEVICES.join(', ')}`);
  }
  const d = device as Device;
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

/** onnxruntime's refusal to load a model on the CPU, naming the model (its own messages name a source line, not the file). */
export function loadFailure(model: string, err: unknown): Error {
  if (err instanceof OnnxFormatError) return err;
  return new OnnxFormatError(`onnxruntime could not load ${model}: ${(err as Error).message}`, { cause: err });
}
