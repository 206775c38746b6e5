/**
 * `npm run bench [-- --only=create,get,pickup,throughput,assets,remote]`
 *
 * Every figure sits next to a baseline measured in the same run (the machine is shared and
 * noisy, so ratios mean more than absolutes). PASS/MISS compares with the targets; a miss
 * never fails the run — only a crashed scenario sets a non-zero exit code.
 * BENCH_CPU_PROF=<dir> writes a .cpuprofile of each Zhinian server child into <dir>.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assets from './assets.ts';
import httpCreate from './http-create.ts';
import httpGet from './http-get.ts';
import { cleanupSync, markdownTable, ROOT, textTable, type Row } from './lib.ts';
import pickup from './pickup.ts';
import remote from './remote.ts';
import throughput from './throughput.ts';

const SCENARIOS: Record<string, () => Promise<Row[]>> = {
  create: httpCreate,
  get: httpGet,
  pickup,
  throughput,
  assets,
  remote,
};

process.on('exit', cleanupSync);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    cleanupSync();
    process.exit(130);
  });
}

const onlyArg = process.argv.slice(2).find((a) => a.startsWith('--only='));
const selected = onlyArg ? onlyArg.slice('--only='.length).split(',').filter(Boolean) : Object.keys(SCENARIOS);
const unknown = selected.filter((name) => !SCENARIOS[name]);
if (unknown.length > 0) {
  console.error(`unknown scenario(s): ${unknown.join(', ')}; choose from ${Object.keys(SCENARIOS).join(', ')}`);
  process.exit(2);
}

const header = [
  `Zhinian bench — ${new Date().toISOString()}`,
  `${os.cpus().length} cores (${os.cpus()[0]?.model.trim() ?? 'unknown cpu'}), Node ${process.version}, ${os.platform()} ${os.release()}`,
  `load average at start: ${os.loadavg()[0].toFixed(1)} (other work on the machine skews absolutes; compare ratios)`,
];
console.log(header.join('\n') + '\n');

const rows: Row[] = [];
let crashed = false;
const started = performance.now();
for (const name of selected) {
  const t0 = performance.now();
  process.stdout.write(`running ${name} … `);
  try {
    const result = await SCENARIOS[name]();
    rows.push(...result);
    console.log(`${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (error) {
    crashed = true;
    console.log('failed');
    console.error((error as Error).stack ?? error);
    rows.push({ scenario: name, zhinian: `error: ${(error as Error).message.split('\n')[0].slice(0, 80)}`, baseline: '', ratio: '', target: '', verdict: 'ERROR' });
  }
  cleanupSync(); // children and temp dirs of this scenario
}

console.log(`\n${textTable(rows)}\n`);
const misses = rows.filter((r) => r.verdict === 'MISS').length;
const passes = rows.filter((r) => r.verdict === 'PASS').length;
const footer = `${passes} PASS, ${misses} MISS — ${((performance.now() - started) / 1000).toFixed(0)} s total, load average at end ${os.loadavg()[0].toFixed(1)}`;
console.log(footer);

if (onlyArg) {
  console.log('(--only run: bench/last-run.md left as it was)');
} else {
  const md = [...header.map((l) => `${l}  `), '', markdownTable(rows), '', footer, ''].join('\n');
  fs.writeFileSync(path.join(ROOT, 'bench/last-run.md'), md);
  console.log('wrote bench/last-run.md');
}
process.exit(crashed ? 1 : 0);
