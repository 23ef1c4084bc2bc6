// Table `enroll_tokens`: Enrollment tokens (stored as hashes).

export interface EnrollTokenTable {
  id: string;
  token_hash: string;
  uses_left: number | null; // null = unlimited
  expires_at: number | null;
  labels: string; // JSON labels added to devices enrolled with this token
  created_at: number;
  revoked: number;
}
