// A fake `virsh` for unit tests: a tiny shell script written to a temp folder
// that prints what a test wants and exits as it wants, for the output and
// error cases a real libvirtd cannot be made to produce.
//
// It runs its commands as virsh 9 does (checked against `virsh -c
// test:///default`): one command as its arguments (`virsh -q -c URI SUB
// ARGS...`), or several as ONE argument separated by `;`, run in order over
// one process, each as if alone: a failing command prints its `error:` on
// stderr and nothing on stdout, and does not stop the next; the exit status is
// the last command's. `echo WORD` is virsh's own (under -q it prints WORD with
// no newline). stdout to a pipe is block-buffered (4 KiB blocks; the rest at
// exit), so a process killed while a command hangs loses what it had not
// flushed; stderr is not buffered.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fake virsh: its path, the folder to put on PATH, and cleanup. */
export interface FakeVirsh {
  path: string;
  dir: string;
  /** Every argv it was called with is appended here, one line each (args joined by NUL→'|'); one line per process, a batch included. */
  callsFile: string;
  remove(): void;
}

/** stdout's block size when it is a pipe (glibc: the pipe's st_blksize). */
export const FAKE_BLOCK = 4096;

/**
 * Write a fake `virsh`; it logs its arguments to callsFile first. `script`
 * (sh) handles one command: its arguments are `-q -c URI SUB ARGS...` (so
 * "$4" is the subcommand), and it may print, fail (`exit 1`) or hang (`exec
 * sleep 600`). `opts.connect` (sh) runs once before any command, as virsh's
 * connection does: it may fail the whole process.
 */
export function writeFakeVirsh(script: string, opts: { connect?: string } = {}): FakeVirsh {
  const dir = mkdtempSync(join(tmpdir(), 'rcl-fake-virsh-'));
  const path = join(dir, 'virsh');
  const callsFile = join(dir, 'calls');
  writeFileSync(
    path,
    `#!/bin/sh
(for a in "$@"; do printf '%s|' "$a"; done; printf ' LC_ALL=%s\\n' "$LC_ALL") >> '${callsFile}'
one() {
${script}
}
${opts.connect ?? ''}
case "$4" in
*';'*)
  # Several commands in one argument: run each as if alone, stdout through a block buffer.
  q=$1; c=$2; uri=$3; rest=$4; buf='${dir}'/out.$$; : > "$buf"; size=0; rc=0
  while [ -n "$rest" ]; do
    cmd=\${rest%%;*}
    case "$rest" in *';'*) rest=\${rest#*;} ;; *) rest= ;; esac
    set -f; set -- "$q" "$c" "$uri" $cmd; set +f
    [ -z "$4" ] && continue
    if [ "$4" = echo ]; then out=$5; rc=0
    else out=$(one "$@"; r=$?; printf x; exit $r); rc=$?; out=\${out%x}
    fi
    printf '%s' "$out" >> "$buf"; size=$((size + \${#out}))
    if [ "$size" -ge ${FAKE_BLOCK} ]; then
      n=$((size / ${FAKE_BLOCK} * ${FAKE_BLOCK}))
      head -c "$n" "$buf"; tail -c +"$((n + 1))" "$buf" > "$buf.t"; mv "$buf.t" "$buf"; size=$((size - n))
    fi
  done
  cat "$buf"; rm -f "$buf"; exit $rc ;;
esac
one "$@"
`,
  );
  chmodSync(path, 0o755);
  return { path, dir, callsFile, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
