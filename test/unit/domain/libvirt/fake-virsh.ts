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
// no newline; `echo --err WORD` prints `error: WORD` and a newline on
// stderr). stdout to a pipe is block-buffered (4 KiB blocks; the rest at
// exit), so a process killed while a command hangs loses what it had not
// flushed; stderr is not buffered.
//
// `dumpxml ... --xpath EXPR --wrap` is virsh 9's too (libvirt evaluates EXPR
// over the domain XML): EXPR is a union of absolute element paths, each step
// a name with optional [@attr="v"] predicates; the elements the script's
// dumpxml has there are printed in document order, each with its subtree and
// the namespace declarations of its ancestors that it uses, inside
// `<nodes>...</nodes>` (`<nodes/>` when none matched). With `xpath: false` it
// is an older virsh, whose dumpxml refuses --xpath with virsh's error.
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
 * sleep 600`); for `dumpxml --xpath EXPR --wrap` it is given the dumpxml
 * without those options. `opts.connect` (sh) runs once before any command, as
 * virsh's connection does: it may fail the whole process. `opts.xpath: false`
 * makes it a virsh without `dumpxml --xpath`; `opts.echoErr: false` one whose
 * `echo` has no `--err` (it refuses a command string that uses it, running
 * none of it, as virsh does with an option it does not know).
 */
export function writeFakeVirsh(script: string, opts: { connect?: string; xpath?: boolean; echoErr?: boolean } = {}): FakeVirsh {
  const dir = mkdtempSync(join(tmpdir(), 'rcl-fake-virsh-'));
  const path = join(dir, 'virsh');
  const callsFile = join(dir, 'calls');
  const select = join(dir, 'select.awk');
  writeFileSync(select, SELECT);
  const noXpath = `echo "error: command 'dumpxml' doesn't support option --xpath" >&2; return 1`;
  writeFileSync(
    path,
    `#!/bin/sh
# One write per call, so that calls made at once do not interleave in the log.
# (dash's printf writes an argument longer than its buffer apart from the rest: one argument, newline included).
line=; for a in "$@"; do line="$line$a|"; done
printf '%s' "$line LC_ALL=$LC_ALL
" >> '${callsFile}'
one() {
${script}
}
# One command; dumpxml --xpath EXPR --wrap selects from the script's dumpxml.
cmd() {
  case "$4" in dumpxml) ;; *) one "$@"; return ;; esac
  case " $* " in *' --xpath '*) ;; *) one "$@"; return ;; esac
  ${opts.xpath === false ? noXpath : ':'}
  xp=; wrap=; prev=
  for a do
    shift
    if [ "$prev" = --xpath ]; then xp=$a; prev=; continue; fi
    prev=$a
    case "$a" in --xpath) ;; --wrap) wrap=1 ;; *) set -- "$@" "$a" ;; esac
  done
  [ -n "$xp" ] && [ -n "$wrap" ] || { echo "error: fake virsh: --xpath EXPR goes with --wrap" >&2; return 1; }
  xml=$(one "$@") || { r=$?; printf '%s' "$xml"; return $r; }
  printf '%s' "$xml" | awk -v EXPR="$xp" -f '${select}'
}
${opts.connect ?? ''}
case "$4" in
*';'*)
  ${opts.echoErr === false ? `case "$4" in *'echo --err'*) echo "error: command 'echo' doesn't support option --err" >&2; exit 1 ;; esac` : ':'}
  # Several commands in one argument: run each as if alone, stdout through a block buffer.
  q=$1; c=$2; uri=$3; rest=$4; buf='${dir}'/out.$$; : > "$buf"; size=0; rc=0
  while [ -n "$rest" ]; do
    cmd=\${rest%%;*}
    case "$rest" in *';'*) rest=\${rest#*;} ;; *) rest= ;; esac
    set -f; set -- "$q" "$c" "$uri" $cmd; set +f
    [ -z "$4" ] && continue
    if [ "$4" = echo ] && [ "$5" = --err ]; then echo "error: $6" >&2; out=; rc=0
    elif [ "$4" = echo ]; then out=$5; rc=0
    else out=$(cmd "$@"; r=$?; printf x; exit $r); rc=$?; out=\${out%x}
    fi
    printf '%s' "$out" >> "$buf"; size=$((size + \${#out}))
    if [ "$size" -ge ${FAKE_BLOCK} ]; then
      n=$((size / ${FAKE_BLOCK} * ${FAKE_BLOCK}))
      head -c "$n" "$buf"; tail -c +"$((n + 1))" "$buf" > "$buf.t"; mv "$buf.t" "$buf"; size=$((size - n))
    fi
  done
  cat "$buf"; rm -f "$buf"; exit $rc ;;
esac
cmd "$@"
`,
  );
  chmodSync(path, 0o755);
  return { path, dir, callsFile, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

// The selection of `dumpxml --xpath EXPR --wrap` (awk: a fork as cheap as the script's): the XML on stdin, EXPR in -v EXPR.
const SELECT = String.raw`function decls(tag,   t, r) {
  r = ""; t = tag
  while (match(t, /[ \t\n]xmlns(:[A-Za-z0-9_.-]+)?=("[^"]*"|'[^']*')/)) {
    r = r substr(t, RSTART + 1, RLENGTH - 1) "\001"; t = substr(t, RSTART + RLENGTH)
  }
  return r
}
function selected(d,   k, j, steps, n, step, nm, preds, a, v, q, ok) {
  for (k = 1; k <= np; k++) {
    n = split(substr(P[k], 2), steps, "/")
    if (n != d) continue
    for (j = 1; j <= n; j++) {
      step = steps[j]; q = index(step, "[")
      nm = q ? substr(step, 1, q - 1) : step
      if (nm != names[j]) break
      preds = q ? substr(step, q) : ""; ok = 1
      while (match(preds, /\[@[A-Za-z0-9_:.-]+="[^"]*"\]/)) {
        a = substr(preds, RSTART + 2, RLENGTH - 3); preds = substr(preds, RSTART + RLENGTH)
        q = index(a, "="); v = substr(a, q + 2, length(a) - q - 2); a = substr(a, 1, q - 1)
        if (!match(tags[j], "[ \t\n]" a "=(\"" v "\"|'" v "')")) ok = 0
      }
      if (!ok || preds != "") break
    }
    if (j > n) return 1
  }
  return 0
}
function out(s, e, ns,   text, open, m, i, key, pfx, used, add, at) {
  text = substr(xml, s, e - s + 1)
  open = substr(text, 1, index(text, ">"))
  m = split(ns, list, "\001"); add = ""
  for (i = 1; i <= m; i++) {
    if (list[i] == "") continue
    key = substr(list[i], 1, index(list[i], "=") - 1)
    if (index(open, " " key "=") || index(open, "\n" key "=") || index(open, "\t" key "=")) continue
    if (key == "xmlns") used = match(text, /<[A-Za-z_][A-Za-z0-9_.-]*[ \t\n\/>]/)
    else { pfx = substr(key, 7); used = index(text, "<" pfx ":") || match(text, "[ \t\n]" pfx ":[A-Za-z_]") }
    if (used) add = add " " list[i]
  }
  at = substr(open, length(open) - 1, 1) == "/" ? length(open) - 1 : length(open)
  nf++; fs[nf] = s; ft[nf] = substr(text, 1, at - 1) add substr(text, at)
}
BEGIN { np = split(EXPR, P, "|") }
{ xml = xml $0 "\n" }
END {
  d = 0; pos = 1; inh[1] = ""; decl[0] = ""
  while ((i = index(substr(xml, pos), "<")) > 0) {
    start = pos + i - 1
    if (substr(xml, start, 4) == "<!--") { pos = start + index(substr(xml, start), "-->") + 2; continue }
    if (substr(xml, start, 9) == "<![CDATA[") { pos = start + index(substr(xml, start), "]]>") + 2; continue }
    e = index(substr(xml, start), ">"); if (!e) break
    tag = substr(xml, start, e); pos = start + e
    c = substr(tag, 2, 1)
    if (c == "?" || c == "!") continue
    if (c == "/") { if (sel[d]) out(begin[d], pos - 1, inh[d]); d--; continue }
    match(tag, /^<[A-Za-z0-9_:.-]+/)
    d++; names[d] = substr(tag, 2, RLENGTH - 1); tags[d] = tag; begin[d] = start
    inh[d] = d == 1 ? "" : inh[d - 1] decl[d - 1]; decl[d] = decls(tag); sel[d] = selected(d)
    if (substr(tag, length(tag) - 1, 1) == "/") { if (sel[d]) out(start, pos - 1, inh[d]); d-- }
  }
  for (i = 2; i <= nf; i++) for (j = i; j > 1 && fs[j - 1] > fs[j]; j--) { t = fs[j]; fs[j] = fs[j - 1]; fs[j - 1] = t; t = ft[j]; ft[j] = ft[j - 1]; ft[j - 1] = t }
  if (nf == 0) { print "<nodes/>"; exit }
  print "<nodes>"; for (i = 1; i <= nf; i++) print "  " ft[i]; print "</nodes>"
}
`;
