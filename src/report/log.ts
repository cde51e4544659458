// Messages of a run: to the console (stderr for warnings and errors) and, when
// `logger` exists, to syslog with the tag rc.libvirt (at shutdown the console scrolls away).
import { spawn } from 'node:child_process';
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
  /** Wait until everything was handed to syslog (bounded). */
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

const SYSLOG_PRIORITY: Record<LogLevel, string> = {
  debug: 'daemon.debug',
  info: 'daemon.info',
  notice: 'daemon.notice',
  warn: 'daemon.warning',
  error: 'daemon.err',
};

/** A console (and syslog) log. */
export function createLog(opts: LogOptions): Log {
  const loggerPath = opts.logger === undefined ? findLogger() : opts.logger || undefined;
  const pending = new Set<Promise<void>>();
  const toSyslog = (level: LogLevel, msg: string): void => {
    if (!loggerPath || level === 'debug') return;
    const p = new Promise<void>((resolve) => {
      try {
        const child = spawn(loggerPath, ['-t', 'rc.libvirt', '-p', SYSLOG_PRIORITY[level], '--', msg], { stdio: 'ignore' });
        const t = setTimeout(() => child.kill('SIGKILL'), 2000);
        child.on('error', () => { clearTimeout(t); resolve(); });
        child.on('close', () => { clearTimeout(t); resolve(); });
      } catch {
        resolve();
      }
    });
    pending.add(p);
    void p.then(() => pending.delete(p));
  };
  const write = (level: LogLevel, msg: string): void => {
    toSyslog(level, msg);
    if (level === 'debug' && opts.verbosity < 1) return;
    if ((level === 'info' || level === 'notice') && opts.verbosity < 0) return;
    const stream = level === 'warn' || level === 'error' ? opts.stderr : opts.stdout;
    const prefix = level === 'warn' ? 'warning: ' : level === 'error' ? 'error: ' : '';
    stream.write(`${prefix}${msg}\n`);
  };
  return {
    debug: (m) => write('debug', m),
    info: (m) => write('info', m),
    notice: (m) => write('notice', m),
    warn: (m) => write('warn', m),
    error: (m) => write('error', m),
    record: (level, m) => toSyslog(level, m),
    flush: async () => {
      await Promise.all([...pending]);
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
