// The report's "when each gate would have fired" section, for plans with evidence gates: the comparison gate's
// looks in this rehearsal against a pure failure budget (the same rehearsal without `compare`). The sentences
// serve the terminal and the HTML report alike.
import { formatDuration } from '../engine/duration.ts';
import type { EvidenceGatesView, EvidenceLookView, EvidenceSignalView } from './rehearsal-result.ts';

const esc = (s: unknown): string => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const num = (v: number | null) => (v === null ? '–' : v.toPrecision(3));
const at = (ms: number) => `+${formatDuration(Math.max(0, Math.round(ms / 1000)) * 1000)}`;

/** One signal of a look, e.g. "restarts fail (p=1.2e-5, effect 0.41, treatment 59, control 235)". */
export function signalLine(s: EvidenceSignalView): string {
  const sizes = `treatment ${s.n_treatment}, control ${s.n_control}`;
  if (s.p === null) return `${s.signal} ${s.verdict} (${sizes}, too few samples)`;
  return `${s.signal} ${s.verdict} (p=${num(s.p)}, effect ${num(s.effect)}, ${sizes})`;
}

/** The signals that drove a look (all of them when it passed). */
function driving(l: EvidenceLookView): EvidenceSignalView[] {
  const bad = l.signals.filter((s) => s.verdict !== 'pass');
  return bad.length ? bad : l.signals;
}

/** What the comparison gate did, in one sentence. */
export function comparisonSentence(v: EvidenceGatesView): string {
  const c = v.comparison;
  if (!c) {
    const last = v.looks[v.looks.length - 1];
    return last
      ? `The comparison gate did not stop the rollout (${v.looks.length} looks; the last, at ${at(last.at_ms)} in wave ${last.wave}, ${last.verdict}).`
      : 'The comparison gate took no look (no wave with compare baked).';
  }
  const what =
    c.status_after === 'awaiting-approval'
      ? 'asked for approval'
      : c.status_after === 'halted'
        ? 'halted'
        : c.status_after;
  return (
    `The comparison gate ${what} at ${at(c.at_ms)} in wave ${c.wave} (look ${c.look}, ${c.verdict}): ` +
    `${driving(c).map(signalLine).join('; ')}; ${c.installed} devices had installed the release.`
  );
}

/** What the failure budget alone did, in one sentence. */
export function budgetSentence(v: EvidenceGatesView): string {
  const b = v.failure_budget;
  const head = 'A pure failure budget (the same rehearsal and seed, compare removed from every wave)';
  if (b.halted)
    return `${head} halted at ${at(b.at_ms ?? 0)} in wave ${b.wave ?? '?'} after ${b.installed} devices had installed the release${b.reason ? `: ${b.reason}` : ''}.`;
  if (b.end_state === 'completed')
    return `${head} let it through: completed at ${at(b.time_to_complete_ms ?? 0)}; ${b.installed} devices had installed the release.`;
  return `${head} ended ${b.end_state}; ${b.installed} devices had installed the release.`;
}

/** The HTML section (escaped throughout). */
export function evidenceSection(v: EvidenceGatesView | undefined): string {
  if (!v) return '';
  const rows = v.looks
    .map(
      (l) =>
        `<tr data-wave="${esc(l.wave)}" data-verdict="${esc(l.verdict)}"><td>${esc(at(l.at_ms))}</td><td>${esc(l.wave)}</td><td>${l.look}</td><td>${esc(l.verdict)}</td><td>${esc(l.status_after)}</td><td>${l.installed}</td><td>${esc(l.signals.map(signalLine).join('; '))}</td></tr>`,
    )
    .join('');
  const means = v.signals.map((s) => `<code>${esc(s.name)}</code> ${esc(s.mean)}`).join(', ');
  return `<h2>When each gate would have fired</h2>
<div id="evidence-gates">
<p id="evidence-comparison">${esc(comparisonSentence(v))}</p>
<p id="evidence-budget">${esc(budgetSentence(v))}</p>
<p>Simulated signals (baseline mean events per check-in, Poisson): ${means}.</p>
<table id="evidence-looks"><thead><tr><th>time</th><th>wave</th><th>look</th><th>verdict</th><th>rollout after</th><th>installed</th><th>signals</th></tr></thead><tbody>${rows}</tbody></table>
</div>
`;
}
