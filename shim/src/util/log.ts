// Structured logging (winston). Every component logs through here; nothing else writes to the
// console, because the shim's stdout is parsed by containerd.
import winston from 'winston';

export type Logger = winston.Logger;

export function createLogger(options: { level?: string; stream?: NodeJS.WritableStream; json?: boolean } = {}): Logger {
  const stream = options.stream ?? process.stderr;
  const format = options.json
    ? winston.format.combine(winston.format.timestamp(), winston.format.json())
    : winston.format.combine(
        winston.format.timestamp(),
        winston.format.printf(({ timestamp, level, message, ...meta }) => {
          const extra = Object.keys(meta).length ? ' ' + JSON.stringify(meta) : '';
          return `${timestamp} ${level} ${message}${extra}`;
        }),
      );
  return winston.createLogger({
    level: options.level ?? process.env.STENCIL_LOG_LEVEL ?? 'info',
    format,
    transports: [new winston.transports.Stream({ stream })],
  });
}
