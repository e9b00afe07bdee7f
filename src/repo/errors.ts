/**
 * An error the user can act on: its message says what happened and what to do.
 * The CLI prints it as one line and exits with `exitCode`; anything else is a bug
 * and is printed with its stack.
 */
export class UserError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
    this.name = 'UserError';
  }
}

/** Stored bytes do not match what their name or id promises. */
export class IntegrityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IntegrityError';
  }
}
