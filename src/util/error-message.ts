// Words for any thrown value.

/** The message of any thrown value, for reports. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
