export * from './deliver.ts';
export * from './dispatcher.ts';
export * from './outbox.ts';
export * from './schedule.ts';
export * from './sign.ts';
export * from './endpoints.ts';
export * from './share.ts';
