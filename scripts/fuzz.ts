// `npm run fuzz`: the HTTP API fuzz of test/fuzz-api.test.ts, longer. Defaults to 100,000 requests with a random
// seed; prints progress, then the report (first 20 distinct failure classes), and exits 1 on any finding.
//
//   npm run fuzz                                  # 100,000 requests, random seed
//   npm run fuzz -- --runs 500000 --seed 20261130 # a given seed (to reproduce a report)
//   npm run fuzz -- --concurrency 32 --max 50     # wider, and up to 50 classes in the report
import { parseArgs } from 'node:util';
import { formatReport, fuzz, startFuzzWorld } from '../test/helpers/fuzz.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: process.env.FUZZ_RUNS ?? '100000' },
    seed: { type: 'string', default: process.env.FUZZ_SEED },
    concurrency: { type: 'string', default: '16' },
    max: { type: 'string', default: '20' },
  },
});
const runs = Number(values.runs);
const seed =
  values.seed !== undefined ? Number(values.seed) : (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0;
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(seed)) {
  process.stderr.write('usage: npm run fuzz -- [--runs N] [--seed S] [--concurrency C] [--max CLASSES]\n');
  process.exit(2);
}

const w = await startFuzzWorld();
let code = 0;
try {
  process.stderr.write(`fuzzing ${w.url} with seed ${seed}: ${runs} requests\n`);
  let shown = 0;
  const rep = await fuzz(w, {
    seed,
    runs,
    concurrency: Number(values.concurrency),
    progress: (sent) => {
      if (sent - shown >= 10_000 || sent === runs) {
        shown = sent;
        process.stderr.write(`  ${sent} sent\n`);
      }
    },
  });
  const health = await fetch(new URL('/healthz', w.url)).then(
    (r) => r.status,
    (e: Error) => e.message,
  );
  process.stdout.write(`${formatReport(rep, Number(values.max))}\n/healthz after the run: ${health}\n`);
  if (rep.findings.length || health !== 200 || rep.sent !== runs) {
    process.stdout.write(`reproduce: npm run fuzz -- --seed ${seed} --runs ${runs}\n`);
    code = 1;
  }
} finally {
  await w.close();
}
process.exit(code);
