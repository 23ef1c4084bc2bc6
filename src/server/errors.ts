// The one table of error answers: every refusal is an HttpError (status + one-line message), answered as
// {error, message} where `error` comes from the table below. Services throw these too: the status says what
// kind of refusal it is (not found, conflict, …), and the CLI's offline commands show the message.

export type ErrorCode =
  | 'bad_request'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'too_large'
  | 'range_not_satisfiable'
  | 'rate_limited'
  | 'internal';

/** The `error` field of an answer, by HTTP status, when the error carries no code of its own. */
export const ERROR_CODES: Readonly<Partial<Record<number, ErrorCode>>> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  409: 'conflict',
  413: 'too_large',
  416: 'range_not_satisfiable',
  429: 'rate_limited',
};

/** An error with an HTTP status and a one-line message, turned into {error, message} by the server. */
export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

/** 400: the request is malformed. */
export const badRequest = (message: string): HttpError => new HttpError(400, message);
/** 401: no credentials, or wrong ones. */
export const unauthorized = (message: string): HttpError => new HttpError(401, message);
/** 403: the credentials are fine, the request is not allowed. */
export const forbidden = (message: string): HttpError => new HttpError(403, message);
/** 404: the thing named does not exist. */
export const notFound = (message: string): HttpError => new HttpError(404, message);
/** 409: the request is valid but the current state refuses it. */
export const conflict = (message: string): HttpError => new HttpError(409, message);
/** 429: over a rate or a quota. */
export const rateLimited = (message: string): HttpError => new HttpError(429, message);
/** 415: the body has the wrong content type. */
export const unsupportedMedia = (message: string): HttpError => new HttpError(415, message);

/** The `error` code for a status (the table's, else internal for 5xx and bad_request for the rest). */
export function errorCode(status: number): ErrorCode {
  return ERROR_CODES[status] ?? (status >= 500 ? 'internal' : 'bad_request');
}

/** The status and body of the answer to any thrown error (Fastify's own errors keep their code). */
export function errorAnswer(err: Error & { statusCode?: number; code?: string }): {
  status: number;
  body: { error: string; message: string };
} {
  const status = err instanceof HttpError ? err.statusCode : (err.statusCode ?? 500);
  // Internal errors say nothing about their cause to the client (the server log has it).
  const message =
    status >= 500 && !(err instanceof HttpError) ? 'internal error (see server log)' : err.message;
  return { status, body: { error: err.code ?? errorCode(status), message } };
}
