export * from './settings.ts';
export * from './keys.ts';
export * from './admin.ts';
