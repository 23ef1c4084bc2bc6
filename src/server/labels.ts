// Device labels: what a device says about itself, and what its enrollment token fixed for it.
import { HttpError, type ServerContext } from './context.ts';
import { jsonBytes } from './limits.ts';

/**
 * A device's labels: what it says about itself, overridden by what its enrollment token set (so a device cannot
 * move itself between waves), within the label limits.
 */
export function effectiveLabels(
  ctx: ServerContext,
  own: Record<string, string>,
  fromEnrollment: Record<string, string>,
): Record<string, string> {
  const labels = { ...own, ...fromEnrollment };
  const { labelsMaxEntries, labelsMaxBytes } = ctx.guards.limits;
  if (Object.keys(labels).length > labelsMaxEntries || jsonBytes(labels) > labelsMaxBytes)
    throw new HttpError(
      400,
      `labels: at most ${labelsMaxEntries} entries and ${labelsMaxBytes} bytes (enrollment labels included)`,
    );
  return labels;
}
