import type { Sharp } from 'sharp';
import type { SharpInputOptions, SharpOp } from './sharp-child.ts';

export type PipelineSource = string | { svg: string } | { raw: Buffer; width: number; height: number; channels: 1 | 2 | 3 | 4 };

export declare const SHARP_METHODS: ReadonlySet<string>;

/** The sharp pipeline of a task: `source` → `ops`, not yet written anywhere. */
export declare function buildPipeline(source: PipelineSource, inputOptions: SharpInputOptions | undefined, ops: readonly SharpOp[]): Sharp;
