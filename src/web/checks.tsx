// Health checks as a device reported them. All of it is device-written text: React renders it as text (never
// as HTML), and the characters a page would act on invisibly — control characters and the bidirectional
// overrides that reorder what a reader sees — are shown as visible escapes (\x1b, \u202e).
import type { CheckView, ReportView } from './types.ts';

// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point.
const HIDDEN = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** Device text made visible: newlines and tabs stay, every other control or bidi character becomes an escape. */
export function visible(text: string | null | undefined): string {
  if (!text) return '';
  return text.replace(HIDDEN, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, '0')}`
      : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

function Check({ c }: { c: CheckView }) {
  return (
    <div className={`check ${c.result}`} data-check={c.name}>
      <div className="check-head">
        <span className={`badge ${c.result === 'ok' ? 'good' : 'bad'} small`}>{c.result}</span>
        <span className="mono">{visible(c.name)}</span>
        {c.duration_ms !== null && <span className="muted small"> {c.duration_ms} ms</span>}
      </div>
      {c.output && (
        <pre className="output">
          {c.output_truncated && <span className="muted">{'… (earlier output cut)\n'}</span>}
          {visible(c.output)}
        </pre>
      )}
    </div>
  );
}

/** The checks of a report: failing ones first and open; passing ones folded unless `all`. */
export function Checks({ report, all = false }: { report: ReportView; all?: boolean }) {
  const failing = report.checks.filter((c) => c.result !== 'ok');
  const passing = report.checks.filter((c) => c.result === 'ok');
  return (
    <div className="checks">
      {report.checks.length === 0 && !report.detail_truncated && (
        <span className="muted small">no health checks reported</span>
      )}
      {failing.map((c, i) => (
        // biome-ignore lint/suspicious/noArrayIndexKey: a report's checks are a fixed list without ids; names may repeat
        <Check key={`f${i}`} c={c} />
      ))}
      {passing.length > 0 &&
        (all ? (
          passing.map((c, i) => (
            // biome-ignore lint/suspicious/noArrayIndexKey: a report's checks are a fixed list without ids
            <Check key={`p${i}`} c={c} />
          ))
        ) : (
          <div className="muted small">passed: {passing.map((c) => visible(c.name)).join(', ')}</div>
        ))}
      {report.checks_omitted > 0 && (
        <div className="muted small">
          {report.checks_omitted} more checks not shown (see the API or CLI --json)
        </div>
      )}
      {report.detail_truncated && (
        <div className="muted small">
          The device's detail was larger than the server keeps; only its size was stored.
        </div>
      )}
    </div>
  );
}

/** A table row under a device's row that holds a report's checks, across all `columns` of the table. */
export function ChecksRow({
  of,
  columns,
  report,
  all,
}: {
  of: string;
  columns: number;
  report: ReportView;
  all?: boolean;
}) {
  return (
    <tr className="detail-row" data-checks-of={of}>
      <td colSpan={columns}>
        <Checks report={report} all={all} />
      </td>
    </tr>
  );
}
