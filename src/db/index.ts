export * from './connect.ts';
export * from './migrate.ts';
export * from './schema.ts';
export * from './transaction.ts';
export * from './sort-key.ts';
export * from './keyset.ts';
