/**
 * Domain errors with stable codes. Domain code throws these and never picks an HTTP status:
 * `api/errors.ts` alone maps them to responses.
 */
export class AppError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Missing and not-yours are the same answer: a client never learns another client's ids. */
export class NotFound extends AppError {
  constructor(what: string) {
    super('not_found', `${what} not found.`);
  }
}

export class Conflict extends AppError {
  constructor(message: string, code = 'conflict') {
    super(code, message);
  }
}

/** Bad input; the message names the field. */
export class Invalid extends AppError {
  constructor(
    readonly field: string | null,
    message: string,
    code = 'invalid_request',
  ) {
    super(code, field ? `${field}: ${message}` : message);
  }
}

export class TooLarge extends AppError {
  constructor(message: string) {
    super('too_large', message);
  }
}

export class Unauthorized extends AppError {
  constructor(message = 'Invalid API key.') {
    super('unauthorized', message);
  }
}

export class RateLimited extends AppError {
  constructor(
    readonly retryAfterSeconds: number,
    message = 'Too many requests.',
  ) {
    super('rate_limited', message);
  }
}

/** Normalises anything thrown into an Error, once, where unknown values enter our code. */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  return new Error(typeof value === 'string' ? value : JSON.stringify(value));
}
