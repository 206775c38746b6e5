/**
 * Domain errors with stable codes. Domain code throws these and never picks an HTTP status:
 * `api/errors.ts` alone maps them to responses, with the status the catalogue gives their code.
 */
import { ERR, type ErrorCode } from './error-codes.ts';

export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Missing and not-yours are the same answer: a client never learns another client's ids. */
export class NotFound extends AppError {
  constructor(what: string) {
    super(ERR.not_found, `${what} not found.`);
  }
}

export class Conflict extends AppError {
  constructor(message: string, code: typeof ERR.conflict | typeof ERR.idempotency_conflict | typeof ERR.job_terminal = ERR.conflict) {
    super(code, message);
  }
}

/** Bad input; the message names the field. */
export class Invalid extends AppError {
  constructor(
    readonly field: string | null,
    message: string,
  ) {
    super(ERR.invalid_request, field ? `${field}: ${message}` : message);
  }
}

export class TooLarge extends AppError {
  constructor(message: string) {
    super(ERR.too_large, message);
  }
}

export class Unauthorized extends AppError {
  constructor(message = 'Invalid API key.') {
    super(ERR.unauthorized, message);
  }
}

/** Known, but not allowed to do this (a viewer changing something, a client using an engine it may not). */
export class Forbidden extends AppError {
  constructor(message: string) {
    super(ERR.forbidden, message);
  }
}

export class RateLimited extends AppError {
  constructor(
    readonly retryAfterSeconds: number,
    message = 'Too many requests.',
  ) {
    super(ERR.rate_limited, message);
  }
}

/** Normalises anything thrown into an Error, once, where unknown values enter our code. */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  return new Error(typeof value === 'string' ? value : JSON.stringify(value));
}
