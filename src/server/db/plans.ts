// Table `plans`: rollout plans as applied (the YAML and its validated form). Every query of the table lives here.
import type { Selectable } from 'kysely';
import type { Plan } from '../../engine/plan.ts';
import type { Db } from './database.ts';
import { decode, encode, type Json } from './json.ts';

export interface PlanTable {
  name: string;
  source: string; // YAML as applied
  plan: Json<Plan>; // validated
  updated_at: number;
}

export type PlanRow = Selectable<PlanTable>;

/** A stored plan: its validated form and when it was last applied. */
export interface StoredPlan {
  plan: Plan;
  source: string;
  updatedAt: number;
}

/** Maps a row to a `StoredPlan`. */
export function toStoredPlan(r: PlanRow): StoredPlan {
  return { plan: decode(r.plan), source: r.source, updatedAt: r.updated_at };
}

/** One plan by name, or undefined. */
export async function findPlan(db: Db, name: string): Promise<StoredPlan | undefined> {
  const row = await db.selectFrom('plans').selectAll().where('name', '=', name).executeTakeFirst();
  return row && toStoredPlan(row);
}

/** Every plan, by name. */
export async function listPlans(db: Db): Promise<StoredPlan[]> {
  const rows = await db.selectFrom('plans').selectAll().orderBy('name').execute();
  return rows.map(toStoredPlan);
}

/** Creates or replaces a plan. */
export async function savePlan(db: Db, plan: Plan, source: string, now: number): Promise<void> {
  const row = { source, plan: encode(plan), updated_at: now };
  await db
    .insertInto('plans')
    .values({ name: plan.name, ...row })
    .onConflict((oc) => oc.column('name').doUpdateSet(row))
    .execute();
}
