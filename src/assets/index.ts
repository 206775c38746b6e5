export * from './repo.ts';
export * from './request.ts';
export * from './service.ts';
export * from './store.ts';
export * from './store-local.ts';
export * from './store-s3.ts';
export * from './temp-file.ts';
export * from './signed-url.ts';
