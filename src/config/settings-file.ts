// The settings file (/etc/default/libvirt): `KEY=value` lines, `#` comments,
// blank lines, optional `export `, values optionally in single or double quotes.
// Nothing is expanded: the file stays readable by a shell and by us alike.
import { ConfigError } from './errors.js';

/** One assignment of the settings file. */
export interface FileEntry {
  key: string;
  value: string;
  /** 1-based line number */
  line: number;
}

/** Parse the text of a settings file: its good lines, and a ConfigError naming `file:line` for every bad one (skipped). */
export function readSettingsFile(text: string, file: string): { entries: FileEntry[]; errors: ConfigError[] } {
  const entries: FileEntry[] = [];
  const errors: ConfigError[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = i + 1;
    const t = raw.trim();
    if (t === '' || t.startsWith('#')) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(t);
    if (!m) {
      // The setting name it begins with, if any (upper case, as every setting): the one it was likely meant for.
      const key = /^(?:export\s+)?([A-Z_][A-Z0-9_]*)\b/.exec(t)?.[1];
      const msg = `${file}:${line}: ${key !== undefined ? `${key}: ` : ''}not a KEY=value line: ${JSON.stringify(raw)}`;
      errors.push(new ConfigError(msg, key !== undefined ? { file, line, key } : { file, line }));
      return;
    }
    const key = m[1] as string;
    try {
      entries.push({ key, value: parseValue(m[2] as string), line });
    } catch (err) {
      errors.push(new ConfigError(`${file}:${line}: ${key}: ${(err as Error).message}`, { file, line, key }));
    }
  });
  return { entries, errors };
}

// A value: "double quoted" (\" \\ \$ \` escapes), 'single quoted', or one bare word; then an optional # comment.
function parseValue(text: string): string {
  let value = '';
  let i = 0;
  const first = text[0];
  if (first === '"') {
    i = 1;
    for (;;) {
      const ch = text[i];
      if (ch === undefined) throw new Error('unclosed double quote');
      if (ch === '"') break;
      if (ch === '\\' && i + 1 < text.length && '"\\$`'.includes(text[i + 1] as string)) {
        value += text[i + 1];
        i += 2;
        continue;
      }
      if (ch === '$' || ch === '`') throw new Error(`${ch} expansion is not supported: write the value itself, or escape it`);
      value += ch;
      i += 1;
    }
    i += 1;
  } else if (first === "'") {
    const end = text.indexOf("'", 1);
    if (end < 0) throw new Error('unclosed single quote');
    value = text.slice(1, end);
    i = end + 1;
  } else {
    const m = /^[^\s#]*/.exec(text);
    value = m ? m[0] : '';
    i = value.length;
    if (/["'`$\\;&|<>()]/.test(value)) throw new Error(`quote the value: ${JSON.stringify(value)} holds characters a shell would interpret`);
  }
  const rest = text.slice(i);
  if (rest !== '' && !/^\s+(#.*)?$/.test(rest) && !(value === '' && rest.startsWith('#'))) {
    throw new Error(`unexpected text after the value: ${JSON.stringify(rest.trim())} (quote values that hold spaces)`);
  }
  return value;
}
