// Reading the test guest's serial console log: the lines testbed/guest/init
// prints (RCL-READY, RCL-IGNORED, RCL-POWEROFF, RCL-ERROR) and its boot id.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { sleep } from './process.js';

// The ready line: the guest listens to its power button from now on; group 1 is the boot id.
export const READY_PATTERN = /^RCL-READY boot=(\S+)/m;

// Any line that carries a boot id; group 1 is the id.
const BOOT_ID_PATTERN = /^RCL-\w+ boot=(\S+)/gm;

// Reads a console log, or '' while the file does not exist yet.
export function readConsole(path: string): string {
  try {
    return readFileSync(path, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw err;
  }
}

// The console's current length, to wait for lines printed after this point.
export function consoleOffset(path: string): number {
  return readConsole(path).length;
}

// The last `lines` lines of a console log, for error messages.
export function consoleTail(path: string, lines = 15): string {
  const text = readConsole(path).replace(/\r/g, '').trimEnd();
  if (!text) return '(console empty)';
  return text.split('\n').slice(-lines).join('\n');
}

// The boot id of the last line that names one, or undefined.
export function lastBootId(path: string): string | undefined {
  let id: string | undefined;
  for (const m of readConsole(path).matchAll(BOOT_ID_PATTERN)) id = m[1];
  return id;
}

/** Options of `waitForConsoleLine`. */
export interface WaitForLineOptions {
  timeoutMs: number;
  // Only text after this offset counts (see consoleOffset).
  fromOffset?: number;
  // Stops waiting early with this message when it returns a string (e.g. "QEMU exited").
  failIf?: () => string | undefined;
}

// Waits until a line matching `pattern` appears in the console log; returns the match (offsets relative to fromOffset), or throws with the console's tail.
export async function waitForConsoleLine(path: string, pattern: RegExp, opts: WaitForLineOptions): Promise<RegExpMatchArray> {
  const start = performance.now();
  const from = opts.fromOffset ?? 0;
  const plain = new RegExp(pattern.source, pattern.flags.replace('g', ''));
  for (;;) {
    const match = readConsole(path).slice(from).match(plain);
    if (match) return match;
    const failure = opts.failIf?.();
    if (failure !== undefined) {
      throw new Error(`${failure} before ${pattern} appeared on the console ${path}; its tail:\n${consoleTail(path)}`);
    }
    if (performance.now() - start >= opts.timeoutMs) {
      throw new Error(`no ${pattern} on the console ${path} within ${(opts.timeoutMs / 1000).toFixed(0)} s; its tail:\n${consoleTail(path)}`);
    }
    await sleep(100);
  }
}

// Waits for the guest's ready line (after fromOffset) and returns its boot id.
export async function waitForGuestReady(path: string, opts: WaitForLineOptions): Promise<string> {
  const m = await waitForConsoleLine(path, READY_PATTERN, opts);
  return m[1] ?? '';
}
