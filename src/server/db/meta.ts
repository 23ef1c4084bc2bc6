// Table `meta`: Key/value settings of the server (admin token hash, …).

export interface MetaTable {
  key: string;
  value: string;
}
