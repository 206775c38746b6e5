export * from './settings.ts';
export * from './keys.ts';
export { stampEnvKeyUsed, stampKeysUsed } from './key-rows.ts';
export * from './admin.ts';
