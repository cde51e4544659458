// One long-running `virsh event --loop --event KIND --timestamp` per URI and
// event kind, its lines parsed and handed to listeners. When the stream dies,
// `alive` turns false (waits then poll) and the next `ensure()` starts it again.
import { spawn, type ChildProcess } from 'node:child_process';
import { now } from '../../util/deadline.js';
import type { Log } from '../../util/log.js';
import { parseEventLine, type EventLine } from './parse.js';
import type { Virsh } from './virsh.js';

/** An event line as the stream saw it. */
export interface StreamEvent extends EventLine {
  /** performance.now() when the line arrived */
  seenAt: number;
}

/** A running (or dead) event stream. */
export interface EventStream {
  readonly kind: string;
  /** The virsh process runs. */
  readonly alive: boolean;
  /** Start the stream unless it runs (not more often than every `retryMs`). */
  ensure(): void;
  /** Listen to events; returns the unsubscribe function. */
  subscribe(listener: (ev: StreamEvent) => void): () => void;
  /** Listen to the stream's death. */
  onDeath(listener: () => void): () => void;
  /** Kill the virsh process (SIGTERM, then SIGKILL) and wait until it is gone (bounded). */
  close(): Promise<void>;
}

/** Options of createEventStream. */
export interface EventStreamOptions {
  virsh: Virsh;
  /** `lifecycle` or `reboot`. */
  kind: string;
  log?: Log;
  /** Least time between two starts of the stream (ms). */
  retryMs?: number;
}

/** An event stream for one URI and event kind; it starts on the first `ensure()`. */
export function createEventStream(opts: EventStreamOptions): EventStream {
  const listeners = new Set<(ev: StreamEvent) => void>();
  const deathListeners = new Set<() => void>();
  const retryMs = opts.retryMs ?? 5000;
  let child: ChildProcess | undefined;
  let lastStart = -Infinity;
  let closed = false;
  let buffer = '';

  const onLine = (line: string): void => {
    const parsed = parseEventLine(line);
    if (!parsed) {
      if (line.trim()) opts.log?.debug(`virsh event (${opts.virsh.uri}): ignored line ${JSON.stringify(line.slice(0, 200))}`);
      return;
    }
    const ev: StreamEvent = { ...parsed, seenAt: now() };
    for (const l of [...listeners]) {
      try {
        l(ev);
      } catch (err) {
        opts.log?.warn(`event listener failed: ${(err as Error).message}`);
      }
    }
  };

  const start = (): void => {
    lastStart = now();
    const argv = opts.virsh.argv(['event', '--loop', '--event', opts.kind, '--timestamp']);
    const [file, ...args] = argv;
    let proc: ChildProcess;
    try {
      // A process group of its own: close() ends it with whatever it started (a VIRSH wrapper's virsh).
      proc = spawn(file ?? 'virsh', args, { env: opts.virsh.env(), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    } catch (err) {
      opts.log?.warn(`cannot start ${argv.join(' ')}: ${(err as Error).message}; waits poll instead`);
      return;
    }
    child = proc;
    let stderr = '';
    buffer = '';
    proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        onLine(line);
      }
    });
    proc.stderr?.setEncoding('utf8').on('data', (c: string) => {
      if (stderr.length < 4096) stderr += c;
    });
    proc.on('error', (err) => {
      opts.log?.warn(`${argv.join(' ')}: ${err.message}; waits poll instead`);
    });
    proc.on('close', (code, sig) => {
      if (child === proc) child = undefined;
      if (!closed) {
        opts.log?.warn(`${argv.join(' ')} ended (${sig ?? `exit ${code}`}${stderr.trim() ? `: ${stderr.trim()}` : ''}); waits poll instead`);
      }
      for (const l of [...deathListeners]) l();
    });
  };

  return {
    kind: opts.kind,
    get alive() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    ensure() {
      if (closed || child) return;
      if (now() - lastStart < retryMs) return;
      start();
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    onDeath(listener) {
      deathListeners.add(listener);
      return () => deathListeners.delete(listener);
    },
    async close() {
      closed = true;
      const proc = child;
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        const kill = setTimeout(() => killGroup(proc, 'SIGKILL'), 1000);
        // Something that left the group may still hold the pipes: let them go, so they never keep the run alive.
        const give = setTimeout(() => {
          proc.stdout?.destroy();
          proc.stderr?.destroy();
          proc.unref();
          resolve();
        }, 3000);
        proc.once('close', () => {
          clearTimeout(kill);
          clearTimeout(give);
          resolve();
        });
        killGroup(proc, 'SIGTERM');
      });
    },
  };
}

// Signal the watcher's process group (it leads one), or the watcher alone when that fails.
function killGroup(proc: ChildProcess, sig: NodeJS.Signals): void {
  try {
    if (proc.pid !== undefined) process.kill(-proc.pid, sig);
  } catch {
    proc.kill(sig);
  }
}
