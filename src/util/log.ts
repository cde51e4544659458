// Messages of a run: to the console (stderr for warnings and errors) and, when
// `logger` exists, to syslog with the tag rc.libvirt (at shutdown the console
// scrolls away), through one `logger` process per run.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';

/** How loud a message is. */
export type LogLevel = 'debug' | 'info' | 'notice' | 'warn' | 'error';

/** Where a run's messages go. */
export interface Log {
  debug(msg: string): void;
  info(msg: string): void;
  /** An important fact that also goes to syslog even when quiet. */
  notice(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  /** To syslog only, not the console (for facts the console already shows another way, e.g. live progress lines). */
  record?(level: LogLevel, msg: string): void;
  /** Wait until everything was handed to syslog (bounded by SYSLOG_FLUSH_MS); later messages start a new `logger`. */
  flush(): Promise<void>;
}

/** Options of createLog. */
export interface LogOptions {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** -1 quiet (warnings and errors only), 0 normal, 1+ debug */
  verbosity: number;
  /** Also send to syslog through this `logger` program; false to disable. */
  logger?: string | false;
}

// Syslog priorities (RFC 5424): facility daemon (3) * 8 + the level's severity.
const SYSLOG_PRIORITY: Record<LogLevel, number> = {
  debug: 3 * 8 + 7,
  info: 3 * 8 + 6,
  notice: 3 * 8 + 5,
  warn: 3 * 8 + 4,
  error: 3 * 8 + 3,
};

/** How long flush() waits for `logger` to hand everything over before killing it. */
export const SYSLOG_FLUSH_MS = 2000;

/**
 * One `logger` process for the whole run, fed through its stdin: each line
 * carries its own priority (`--prio-prefix`), so messages keep their order and
 * a run spawns one process, not one per message.
 *
 * The process starts after the task that sent the first message, not inside
 * it: spawning costs the run's one thread milliseconds (a fork of node), and
 * the first message usually comes right before the first guest action, which
 * goes first. The lines wait in memory until then; flush() starts it at once.
 */
class SyslogPipe {
  #child: ChildProcess | undefined;
  #closed: Promise<void> | undefined;
  #broken = false;
  #pending = '';
  #starting: NodeJS.Immediate | undefined;

  constructor(private readonly loggerPath: string) {}

  send(level: LogLevel, msg: string): void {
    if (this.#broken) return;
    // A line break would start a syslog line without a priority: every line gets its own.
    const text = msg
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => `<${SYSLOG_PRIORITY[level]}>${l}\n`)
      .join('');
    if (!text) return;
    if (this.#child) {
      this.#child.stdin?.write(text);
      return;
    }
    this.#pending += text;
    this.#starting ??= setImmediate(() => this.#drain()).unref();
  }

  async flush(): Promise<void> {
    this.#drain();
    const child = this.#child;
    const closed = this.#closed;
    this.#child = undefined;
    this.#closed = undefined;
    if (!child || !closed) return;
    child.stdin?.end();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), SYSLOG_FLUSH_MS)));
    if ((await Promise.race([closed, late])) === 'late') child.kill('SIGKILL');
    clearTimeout(timer);
  }

  // Start the logger for the lines waiting, if any, and hand them over.
  #drain(): void {
    if (this.#starting) clearImmediate(this.#starting);
    this.#starting = undefined;
    const text = this.#pending;
    this.#pending = '';
    if (!text || this.#broken) return;
    (this.#child ?? this.#start())?.stdin?.write(text);
  }

  #start(): ChildProcess | undefined {
    try {
      const child = spawn(this.loggerPath, ['-t', 'rc.libvirt', '--prio-prefix'], { stdio: ['pipe', 'ignore', 'ignore'] });
      this.#closed = new Promise<void>((resolve) => {
        child.on('error', () => {
          this.#broken = true;
          resolve();
        });
        child.on('close', () => resolve());
      });
      // A logger that went away loses syslog lines, never the run.
      child.stdin?.on('error', () => (this.#broken = true));
      // Neither the process nor its pipe keeps the run alive; flush() ends them.
      child.unref();
      (child.stdin as (NodeJS.WritableStream & { unref?: () => void }) | null)?.unref?.();
      this.#child = child;
      return child;
    } catch {
      this.#broken = true;
      return undefined;
    }
  }
}

/** A console (and syslog) log. */
export function createLog(opts: LogOptions): Log {
  const loggerPath = opts.logger === undefined ? findLogger() : opts.logger || undefined;
  const syslog = loggerPath ? new SyslogPipe(loggerPath) : undefined;
  const toSyslog = (level: LogLevel, msg: string): void => {
    if (level !== 'debug') syslog?.send(level, msg);
  };
  const write = (level: LogLevel, msg: string): void => {
    toSyslog(level, msg);
    if (level === 'debug' && opts.verbosity < 1) return;
    if ((level === 'info' || level === 'notice') && opts.verbosity < 0) return;
    const stream = level === 'warn' || level === 'error' ? opts.stderr : opts.stdout;
    const prefix = level === 'warn' ? 'warning: ' : level === 'error' ? 'error: ' : '';
    try {
      stream.write(`${prefix}${msg}\n`);
    } catch {
      // A console that is gone (EPIPE, EIO) loses this line, never the run; syslog has it.
    }
  };
  return {
    debug: (m) => write('debug', m),
    info: (m) => write('info', m),
    notice: (m) => write('notice', m),
    warn: (m) => write('warn', m),
    error: (m) => write('error', m),
    record: (level, m) => toSyslog(level, m),
    flush: async () => {
      await syslog?.flush();
    },
  };
}

/** A log that keeps every message, for tests. */
export function createMemoryLog(): Log & { lines: { level: LogLevel; msg: string }[] } {
  const lines: { level: LogLevel; msg: string }[] = [];
  const add = (level: LogLevel) => (msg: string): void => {
    lines.push({ level, msg });
  };
  return {
    lines,
    debug: add('debug'),
    info: add('info'),
    notice: add('notice'),
    warn: add('warn'),
    error: add('error'),
    flush: async () => undefined,
  };
}

function findLogger(): string | undefined {
  for (const p of ['/usr/bin/logger', '/bin/logger']) if (existsSync(p)) return p;
  return undefined;
}
