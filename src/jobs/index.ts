export * from './lifecycle.ts';
export * from './queue.ts';
export * from './repo.ts';
export * from './request.ts';
export * from './service.ts';
export * from './settle.ts';
export { FIELDS_FOR } from './validate.ts';
