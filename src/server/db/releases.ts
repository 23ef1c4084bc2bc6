// Table `releases`: Releases: immutable (component, version) with artifacts and approval.
import type { Generated } from 'kysely';

export interface ReleaseTable {
  id: Generated<number>;
  component: string;
  version: string;
  artifacts: string; // JSON Artifact[]
  provenance: string; // JSON
  created_at: number;
  approved_at: number | null;
  approved_by: string | null;
}
