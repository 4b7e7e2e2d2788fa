/** How many hardware threads share each physical core (SMT), which sizes onnxruntime's default thread pool. */
import { readFileSync, readdirSync } from 'node:fs';

let cached: number | undefined;

/**
 * Hardware threads per physical core, from Linux sysfs (online CPUs grouped by package and core id); 1 where
 * the topology cannot be read. onnxruntime's default intra-op pool has one thread per physical core, because a
 * second thread on a core adds little to a step that is bound by memory bandwidth.
 */
export function threadsPerCore(): number {
  if (cached !== undefined) return cached;
  const dir = '/sys/devices/system/cpu';
  const cores = new Set<string>();
  let online = 0;
  try {
    for (const cpu of readdirSync(dir).filter((n) => /^cpu\d+$/.test(n))) {
      try {
        const id = (file: string) => readFileSync(`${dir}/${cpu}/topology/${file}`, 'utf8').trim();
        cores.add(`${id('physical_package_id')}:${id('core_id')}`);
        online++;
      } catch {
        // offline CPUs have no topology
      }
    }
  } catch {
    // not Linux
  }
  cached = cores.size > 0 ? Math.max(1, Math.round(online / cores.size)) : 1;
  return cached;
}
