/** Longest text from outside kept in one column (a provider's error message, a receiver's answer). */
const MAX_STORED_TEXT = 2_000;

/**
 * Text that came from outside (a provider's error message or task id, a result URL, a file name
 * a server sent, a webhook receiver's answer), made storable before it reaches the database:
 * PostgreSQL refuses NUL in text (the whole write fails, and the job it was settling stays
 * `running` until its lease lapses), and an unpaired UTF-16 surrogate is not valid UTF-8.
 * Both become U+FFFD; other control characters but tab and line breaks become spaces; the
 * result is at most `maxChars` long (cut on a character boundary, ending in `…`). Not a string
 * (a provider's `message` that is a number or an object): its JSON, or its String() form.
 */
export function storableText(value: unknown, maxChars = MAX_STORED_TEXT): string {
  let text = typeof value === 'string' ? value : describe(value);
  // Cut first (a huge message costs no more than its kept part), then clean what is kept.
  if (text.length > maxChars) text = `${text.slice(0, maxChars - 1)}…`;
  return (text as string & { toWellFormed(): string })
    .toWellFormed()
    .replace(/\u0000/g, '\uFFFD')
    .replace(/[\u0001-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, ' ');
}

function describe(value: unknown): string {
  if (value === undefined) return '';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** No U+0000 and no lone UTF-16 surrogate: the text survives UTF-8 storage on either database unchanged (input that fails this is refused, not cleaned). */
export function isStorableText(text: string): boolean {
  return !text.includes('\u0000') && (text as string & { isWellFormed(): boolean }).isWellFormed();
}
