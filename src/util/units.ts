// Sizes in words.

/** `1.5 GiB` / `300 MiB` */
export function mib(bytes: number): string {
  const m = bytes / (1024 * 1024);
  return m >= 1024 ? `${(m / 1024).toFixed(1)} GiB` : `${Math.round(m)} MiB`;
}
