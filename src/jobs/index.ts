export * from './lifecycle.ts';
export * from './purge.ts';
export * from './repo.ts';
export * from './request.ts';
export * from './service.ts';
export { FIELDS_FOR } from './validate.ts';
