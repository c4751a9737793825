/**
 * The sidecar's logger: pino writing one JSON object per line. Every line carries the
 * capsule, session and principal it concerns (null when not bound), so a log search across
 * many sidecars can be narrowed to one session without guessing from message text.
 */

import { hostname } from "node:os";
import { type DestinationStream, type LevelWithSilent, type Logger, pino } from "pino";

export interface SidecarLoggerOptions {
  readonly level: LevelWithSilent;
  readonly capsule: string;
  readonly session?: string | undefined;
  readonly principal?: string | undefined;
  /** Where lines go; default stdout, written synchronously (see below). */
  readonly destination?: DestinationStream;
}

export type SidecarLogger = Logger;

/**
 * Keys whose values are replaced by "[redacted]" wherever the sidecar logs an object with
 * them, top-level or one level down (pino's redaction has no recursive wildcard, so a secret
 * nested deeper must not be logged at all). Message strings are not scanned: never put a
 * secret into a message.
 */
export const REDACTED_KEYS = [
  "password",
  "token",
  "authorization",
  "apiKey",
  "api_key",
  "secret",
  "privateKey",
  "cookie",
  "credentials",
] as const;

export const REDACT_PATHS: readonly string[] = [
  ...REDACTED_KEYS.flatMap((k) => [k, `*.${k}`]),
  "headers.authorization",
  "headers.cookie",
  "*.headers.authorization",
  "*.headers.cookie",
];

export const REDACTED = "[redacted]";

export function createLogger(opts: SidecarLoggerOptions): SidecarLogger {
  // Synchronous stdout: the line that explains an exit (uncaught error, drain timeout) is
  // written before process.exit runs, not lost in an async buffer.
  const destination = opts.destination ?? pino.destination({ dest: 1, sync: true });
  return pino(
    {
      level: opts.level,
      base: {
        pid: process.pid,
        hostname: hostname(),
        capsule: opts.capsule,
        session: opts.session ?? null,
        principal: opts.principal ?? null,
      },
      redact: { paths: [...REDACT_PATHS], censor: REDACTED },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Level names rather than numbers: log pipelines and people read "warn", not 40.
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
