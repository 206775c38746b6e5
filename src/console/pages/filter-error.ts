import { Invalid } from '../../lib/errors.ts';

/**
 * The message of a filter the query refused (a bad date, an unknown status), for the page to
 * show beside the form with a 400. Anything else is the server's fault: rethrown (a logged 500),
 * never printed, so no database text reaches a page.
 */
export function filterErrorOf(error: unknown): string {
  if (error instanceof Invalid) return error.message;
  throw error;
}
