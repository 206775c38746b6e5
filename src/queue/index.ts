/**
 * The job state machine: every statement that changes a job row, each a named transition
 * whose allowed starting states are declared once (transitions.ts), and the pure decisions
 * around a run (decide.ts). Words: see docs/architecture.md ("Glossary").
 */
export * from './circuit.ts';
export * from './claim.ts';
export * from './claimed-job.ts';
export * from './deadlines.ts';
export * from './decide.ts';
export * from './enqueue.ts';
export { fairKeys, fairKeysResume } from './fair-order.ts';
export * from './lease.ts';
export * from './settle.ts';
export * from './transitions.ts';
export * from './history.ts';
export * from './status-detail.ts';
export { pruneJobChanges } from './recording.ts';
