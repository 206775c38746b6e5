export * from './present.ts';
export * from './purge.ts';
export * from './request.ts';
export * from './service.ts';
export { FIELDS_FOR } from './validate.ts';
