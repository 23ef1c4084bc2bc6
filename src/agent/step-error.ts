// A step of a transaction that failed before activation, with the class reported to the server
// (a journal failure class, or a trust refusal class from verification).
import type { RefusalClass } from '../trust/verifier/device-verifier.ts';
import type { FailureClass } from './journal.ts';

export class StepError extends Error {
  constructor(
    readonly cls: FailureClass | RefusalClass,
    message: string,
  ) {
    super(message);
  }
}
