/**
 * The customer's vocabulary: capabilities and their parameters, job statuses and webhook events,
 * asset kinds and sources, and the Job and Asset shapes the API answers with. Pure: no I/O, and
 * nothing from the features above it (only the row type `toJob` converts).
 */
export * from './asset.ts';
export * from './capabilities.ts';
export * from './job.ts';
export * from './job-status.ts';
