/**
 * One `qemu-io -t writeback` process fed its commands on stdin (neither side of a benchmark pays an
 * fsync per request), with its wall time and peak RSS — the QEMU side of the benchmarks.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

/** Runs `commands` in one `qemu-io -t writeback -f qcow2 PATH` process; resolves when it exits (0 or 1). */
export function qemuIoStdin(path: string, commands: readonly string[]): Promise<{ seconds: number; stdout: string; peakRssKiB?: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn('qemu-io', ['-t', 'writeback', '-f', 'qcow2', path], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let peak: number | undefined;
    const poll = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peak = Math.max(peak ?? 0, Number(m[1]));
      } catch {
        // The process has exited.
      }
    }, 100);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      // The prompt is printed once per command; keep only the last 64 KiB of the rest.
      stdout += d.replace(/(qemu-io> )+/g, '');
      if (stdout.length > 1 << 20) stdout = stdout.slice(-(1 << 16));
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (e) => {
      clearInterval(poll);
      reject(e);
    });
    child.on('close', (code) => {
      clearInterval(poll);
      const seconds = (performance.now() - t0) / 1000;
      if (code !== 0 && code !== 1) reject(new Error(`qemu-io exited ${code}: ${stderr}`));
      else resolve({ seconds, stdout, ...(peak !== undefined ? { peakRssKiB: peak } : {}) });
    });
    child.stdin.end(commands.join('\n') + '\nquit\n');
  });
}
