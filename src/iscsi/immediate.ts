/**
 * The session's immediate requests in flight (RFC 7143 §3.2.2.1: NOP-Out
 * pings, task management, Logout), by the ITT each was sent with: who waits
 * for which answer, for how long, and what ends the wait (the answer, a
 * Reject, the timeout, or the connection's end). The session sends the PDU;
 * this table only keeps the waits.
 *
 * @example
 * ```ts
 * const waits = new ImmediateWaits();
 * const answer = waits.wait(itt, 10_000, "NOP-Out ping");
 * send(encodeNopOut(...));
 * // in the receive path:
 * waits.answer(h, data); // resolves `answer`
 * ```
 */
import { OperationalError } from "../errors.ts";
import { IscsiProtocolError } from "./errors.ts";
import type { PduHeader } from "./pdu.ts";

/** One wait: how to end it. */
export interface ImmediateWait {
  resolve: (h: PduHeader, data: Uint8Array) => void;
  reject: (e: Error) => void;
}

/** The waits of the immediate requests in flight, by ITT. */
export class ImmediateWaits {
  readonly #waits = new Map<number, ImmediateWait>();

  /** Whether ITT `itt` belongs to an immediate request in flight. */
  has(itt: number): boolean {
    return this.#waits.has(itt);
  }

  /**
   * Wait for the answer to the request sent with `itt`; rejects with
   * OperationalError naming `what` after `timeoutMs`.
   */
  wait(itt: number, timeoutMs: number, what: string): Promise<{ h: PduHeader; data: Uint8Array }> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waits.delete(itt);
        reject(new OperationalError(`${what}: no answer from the target in ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waits.set(itt, {
        resolve: (h, data) => {
          clearTimeout(timer);
          resolve({ h, data });
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  /** The target answered `h.itt`: end that wait. An answer nobody waits for is a protocol error. */
  answer(h: PduHeader, data: Uint8Array): void {
    const w = this.take(h.itt);
    if (!w) throw new IscsiProtocolError(`${h.name} for unknown ITT 0x${h.itt.toString(16)}`);
    w.resolve(h, data);
  }

  /** Remove and return the wait of `itt` (a Reject ends it), if any. */
  take(itt: number): ImmediateWait | undefined {
    const w = this.#waits.get(itt);
    this.#waits.delete(itt);
    return w;
  }

  /** End every wait with `err` (the connection they were sent on is gone). */
  failAll(err: Error): void {
    const all = [...this.#waits.values()];
    this.#waits.clear();
    for (const w of all) w.reject(err);
  }
}
