// The rehearsal report: one self-contained HTML page (inline SVG, inline CSS, no scripts, no external assets).
import { formatDuration } from '../engine/duration.ts';
import type { RehearsalResult } from './rehearsal.ts';
import { evidenceSection } from './report-evidence.ts';

const esc = (s: unknown): string => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export function formatSpan(ms: number | null): string {
  if (ms === null) return '—';
  const m = Math.round(ms / 60_000);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${m % 60}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

const W = 860;
const H = 280;
const PAD = { l: 64, r: 16, t: 16, b: 36 };

/** Exposure over time: devices running the release, and devices ever exposed, against virtual time. */
function exposureChart(r: RehearsalResult): string {
  const pts = r.series;
  const tMax = Math.max(1, r.virtual_ms, ...pts.map((p) => p.t));
  const yMax = Math.max(1, ...pts.map((p) => p.exposed));
  const x = (t: number) => PAD.l + ((W - PAD.l - PAD.r) * t) / tMax;
  const y = (v: number) => H - PAD.b - ((H - PAD.t - PAD.b) * v) / yMax;
  // Step lines: the value holds until the next point.
  const path = (key: 'running' | 'exposed' | 'failed') => {
    let d = '';
    let prev: number | null = null;
    for (const p of pts) {
      const px = x(p.t).toFixed(1);
      if (prev === null) d += `M${px},${y(p[key]).toFixed(1)}`;
      else d += `H${px}V${y(p[key]).toFixed(1)}`;
      prev = p[key];
    }
    return `${d}H${x(tMax).toFixed(1)}`;
  };
  const ticks: string[] = [];
  for (let k = 0; k <= 4; k++) {
    const v = Math.round((yMax * k) / 4);
    ticks.push(
      `<line x1="${PAD.l}" x2="${W - PAD.r}" y1="${y(v)}" y2="${y(v)}" class="grid"/><text x="${PAD.l - 6}" y="${y(v) + 4}" text-anchor="end">${v}</text>`,
    );
    const t = (tMax * k) / 4;
    ticks.push(`<text x="${x(t)}" y="${H - 12}" text-anchor="middle">${esc(formatSpan(t))}</text>`);
  }
  const marks = r.waves
    .filter((w) => w.reached_at_ms !== null)
    .map(
      (w) =>
        `<line x1="${x(w.reached_at_ms!)}" x2="${x(w.reached_at_ms!)}" y1="${PAD.t}" y2="${H - PAD.b}" class="wave"/><text x="${x(w.reached_at_ms!) + 3}" y="${PAD.t + 10}" class="wlabel">${esc(w.name)}</text>`,
    )
    .join('');
  return `<svg id="exposure-chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="exposure over time">
<title>Exposure over time</title>${ticks.join('')}${marks}
<path d="${path('exposed')}" class="exposed" data-series="exposed"/>
<path d="${path('running')}" class="running" data-series="running"/>
<path d="${path('failed')}" class="failed" data-series="failed"/>
</svg>`;
}

/** Per-wave outcome: stacked bars of succeeded, failed and never-received devices, and rollbacks. */
function waveChart(r: RehearsalResult): string {
  const n = Math.max(1, r.waves.length);
  const h = 40 + n * 34;
  const max = Math.max(1, ...r.waves.map((w) => Math.max(w.selected, w.exposed)));
  const bw = W - 420;
  const rows = r.waves
    .map((w, i) => {
      const y = 20 + i * 34;
      const s = (bw * w.succeeded) / max;
      const f = (bw * w.failed) / max;
      const rest = (bw * Math.max(0, w.selected - w.succeeded - w.failed)) / max;
      const rb = (bw * w.rolled_back) / max;
      return `<g class="wave-row" data-wave="${esc(w.name)}">
<text x="150" y="${y + 14}" text-anchor="end">${esc(w.name)}</text>
<rect x="160" y="${y}" width="${s.toFixed(1)}" height="18" class="ok"><title>${w.succeeded} succeeded</title></rect>
<rect x="${(160 + s).toFixed(1)}" y="${y}" width="${f.toFixed(1)}" height="18" class="bad"><title>${w.failed} failed</title></rect>
<rect x="${(160 + s + f).toFixed(1)}" y="${y}" width="${rest.toFixed(1)}" height="18" class="open"><title>${w.selected - w.succeeded - w.failed} not finished</title></rect>
<rect x="160" y="${y + 20}" width="${rb.toFixed(1)}" height="5" class="rb"><title>${w.rolled_back} rolled back</title></rect>
<text x="${(166 + s + f + rest).toFixed(1)}" y="${y + 14}">${w.selected} sel · ${w.failed} failed · ${w.rolled_back} rolled back</text>
</g>`;
    })
    .join('');
  return `<svg id="wave-chart" viewBox="0 0 ${W} ${h}" width="${W}" height="${h}" role="img" aria-label="per-wave outcome"><title>Per-wave outcome</title>${rows}</svg>`;
}

/** The device model, to the second (formatSpan rounds to minutes), and where each figure came from. */
function modelLine(r: RehearsalResult): string {
  const st = r.settings;
  const [a, b] = st.apply_ms;
  return (
    `Simulated devices check in every ${formatDuration(st.poll_ms)} (${st.sources.poll}), apply in ` +
    `${a === b ? formatDuration(a) : `${formatDuration(a)}–${formatDuration(b)}`} (${st.sources.apply}) and run health checks for ` +
    `${formatDuration(st.probation_ms)} (${st.sources.health}): a healthy device reports within ${formatDuration(st.time_to_report_ms)} ` +
    `of an offer. The control plane reacts within ${formatDuration(st.tick_ms)}.`
  );
}

/** Timing warnings, at the top: a deadline healthy devices cannot meet makes every other number misleading. */
function warningsBlock(r: RehearsalResult): string {
  if (!r.warnings.length) return '';
  const items = r.warnings.map((w) => `<li data-wave="${esc(w.wave)}">${esc(w.message)}</li>`).join('');
  return `<div id="warnings" class="warn"><b>Warning: the plan's deadlines are shorter than the modelled time to report</b><ul>${items}</ul></div>
`;
}

export function renderReport(r: RehearsalResult): string {
  const verdict =
    r.end_state === 'completed'
      ? `completed in ${formatSpan(r.time_to_complete_ms)}`
      : r.time_to_halt_ms !== null
        ? `halted after ${formatSpan(r.time_to_halt_ms)} in wave ${r.halted_at_wave ?? '?'}; ends ${r.end_state}`
        : `ended ${r.end_state}`;
  const rows = r.waves
    .map(
      (w) =>
        `<tr data-wave="${esc(w.name)}"><td>${esc(w.name)}</td><td>${w.selected}</td><td class="n-exposed">${w.exposed}</td><td>${w.succeeded}</td><td class="n-failed">${w.failed}</td><td>${w.rolled_back}</td><td>${w.skipped}</td><td>${esc(w.reached_at_ms === null ? 'not reached' : `+${formatSpan(w.reached_at_ms)}`)}</td></tr>`,
    )
    .join('');
  const faults = r.faults.length
    ? r.faults.map((f) => `<li><code>${esc(f.spec)}</code>: ${f.devices} devices</li>`).join('')
    : '<li>none</li>';
  const trs = r.transitions
    .map((t) => `<li>+${esc(formatSpan(t.at_ms))} <b>${esc(t.to)}</b> ${esc(t.why)}</li>`)
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rehearsal: ${esc(r.plan)} over ${r.fleet} devices</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f24;max-width:920px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.kpi{display:flex;gap:12px;flex-wrap:wrap}.kpi div{border:1px solid #d0d7de;border-radius:6px;padding:8px 12px}
.kpi b{display:block;font-size:20px}
table{border-collapse:collapse}td,th{border-bottom:1px solid #d0d7de;padding:4px 10px;text-align:right}
td:first-child,th:first-child{text-align:left}
svg text{font:11px system-ui,sans-serif;fill:#57606a}.grid{stroke:#eaeef2}.wave{stroke:#8c959f;stroke-dasharray:3 3}
.wlabel{fill:#24292f}.exposed{fill:none;stroke:#0969da;stroke-width:2}.running{fill:none;stroke:#1a7f37;stroke-width:2}
.failed{fill:none;stroke:#cf222e;stroke-width:2}.ok{fill:#2da44e}.bad{fill:#cf222e}.open{fill:#d0d7de}.rb{fill:#bf8700}
.warn{border:1px solid #bf8700;background:#fff8c5;border-radius:6px;padding:8px 12px;margin:12px 0}.warn ul{margin:4px 0 0}
.legend span{margin-right:14px}.sw{display:inline-block;width:10px;height:10px;margin-right:4px}
</style></head><body>
<h1>Rehearsal of plan <code>${esc(r.plan)}</code></h1>
<p id="verdict">${r.fleet} simulated devices, seed <code>${esc(r.seed)}</code>: ${esc(verdict)}${r.reason ? ` — ${esc(r.reason)}` : ''}${r.unfinished ? ` (${esc(r.unfinished)})` : ''}</p>
${warningsBlock(r)}<div class="kpi">
<div>exposed<b id="kpi-exposed">${r.exposed}</b>${r.exposed_percent}% of the fleet</div>
<div>peak running<b id="kpi-peak">${r.peak_running}</b>${r.peak_running_percent}%</div>
<div>time to halt<b id="kpi-halt">${esc(formatSpan(r.time_to_halt_ms))}</b></div>
<div>time to complete<b id="kpi-complete">${esc(formatSpan(r.time_to_complete_ms))}</b></div>
<div>end state<b id="kpi-end">${esc(r.end_state)}</b></div>
</div>
<h2>Exposure over time (virtual)</h2>
<p class="legend"><span><i class="sw" style="background:#0969da"></i>ever exposed</span><span><i class="sw" style="background:#1a7f37"></i>running the release</span><span><i class="sw" style="background:#cf222e"></i>failed</span></p>
${exposureChart(r)}
<h2>Outcome per wave</h2>
${waveChart(r)}
<table id="waves"><thead><tr><th>wave</th><th>selected</th><th>exposed</th><th>succeeded</th><th>failed</th><th>rolled back</th><th>skipped</th><th>reached</th></tr></thead><tbody>${rows}</tbody></table>
${evidenceSection(r.evidence_gates)}<h2>Faults injected</h2><ul>${faults}</ul>
<h2>Engine transitions</h2><ol>${trs}</ol>
<h2>Device model</h2>
<p id="device-model">${esc(modelLine(r))}</p>
<p>Virtual start ${esc(r.settings.start)}; ${r.steps} engine steps, ${r.device_events} device events. The same engine code as the server made every decision. Data: <a href="report.json">report.json</a>.</p>
</body></html>
`;
}
