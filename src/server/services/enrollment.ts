// Enrolling a device with an enrollment token, in one transaction: the token is checked and spent, the device
// stored with its own token (shown once), and the enrollment audited.
import { randomUUID } from 'node:crypto';
import type { EnrollRequest } from '../../protocol/device.ts';
import type { ServerContext } from '../context.ts';
import { appendAudit } from '../db/audit.ts';
import { insertDevice, nameTaken } from '../db/devices.ts';
import { spendUse, tokenByHash, tokenUsable } from '../db/enroll-tokens.ts';
import { HttpError } from '../errors.ts';
import { effectiveLabels } from '../labels.ts';
import { hashToken, newToken } from '../tokens.ts';

/** A newly enrolled device: its id and its token (the only time the token is shown). */
export interface Enrolled {
  device_id: string;
  device_token: string;
}

/** Enrolls a device; 401 for an unusable enrollment token, 409 for a name a live device carries. */
export async function enrollDevice(ctx: ServerContext, req: EnrollRequest): Promise<Enrolled> {
  const now = ctx.clock();
  return ctx.store.db.transaction().execute(async (tx) => {
    const tok = await tokenByHash(tx, hashToken(req.token));
    if (!tokenUsable(tok, now))
      throw new HttpError(401, 'unknown, used up, expired or revoked enrollment token');
    const id = `dev-${randomUUID().slice(0, 12)}`;
    const name = req.name ?? id;
    if (await nameTaken(tx, name))
      throw new HttpError(409, `a device named "${name}" is enrolled already (retire it first)`);
    const labels = effectiveLabels(ctx, req.labels ?? {}, tok.labels);
    await spendUse(tx, tok);
    const token = newToken('dev');
    await insertDevice(tx, {
      id,
      name,
      tokenHash: hashToken(token),
      labels,
      enrollLabels: tok.labels,
      agentVersion: req.agent_version ?? 'unknown',
      now,
    });
    await appendAudit(tx, {
      at: now,
      actor: `enroll-token/${tok.id}`,
      action: 'device.enrolled',
      subject: `device/${id}`,
      detail: { name, labels },
    });
    return { device_id: id, device_token: token };
  });
}
