/** Outbound networking: the URL guard every fetch of a user-supplied URL goes through. */
export * from './fetch-url.ts';
