/**
 * How a real file is stored on the file system, for tests: the CLI's python3 SEEK_DATA/SEEK_HOLE
 * probe (src/io/seek-data.ts). In tests a missing python3 fails loudly (HostProbeError);
 * only the CLI falls back to "fully allocated".
 */
import { probeHostAllocation as probe } from '../../src/io/seek-data.ts';
import type { HostAllocation } from '../../src/model/block-status.ts';

export { probeHostAllocations } from '../../src/io/seek-data.ts';

/** The allocation of the file at `path` (throws if python3 is missing or the file cannot be read). */
export function probeHostAllocation(path: string): HostAllocation {
  return probe(path);
}
