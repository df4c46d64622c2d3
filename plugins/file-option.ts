/** The `file` of a plugin's options, when they carry one. */
export function fileOption(options: unknown): string | undefined {
  const f = (options as { file?: unknown } | null | undefined)?.file;
  return typeof f === 'string' && f !== '' ? f : undefined;
}
