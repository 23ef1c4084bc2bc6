// What a rehearsal reports: the JSON of `ringfence rehearse --json`, report.json and the HTML report.
//
// A word on "exposed": in the rollout view it counts devices *offered* the release; in the rehearsal it counts
// devices that *installed* it (the simulator knows what each device did). The rehearsal's code says
// "installed"; the JSON keeps the field names `exposed` and `exposed_percent`, which the HTML report, the
// demo (it compares the rehearsed exposure with the real one) and scripts read.
import type { TimingModel, TimingWarning } from './timing.ts';

/** Progress of a long rehearsal, about once a second of wall time. */
export interface Progress {
  virtualMs: number;
  wave: string | null;
  status: string;
  /** Devices that installed the release so far. */
  installed: number;
  events: number;
}

export interface WaveOutcome {
  name: string;
  selected: number; // devices the engine chose for the wave
  offered: number;
  exposed: number; // devices that installed the release (see the note above)
  succeeded: number;
  failed: number; // devices that reported a failure or missed their report deadline
  rolled_back: number; // devices back on their previous release (boot guard, health, or rollout rollback)
  skipped: number;
  reached_at_ms: number | null; // virtual time since start when the wave started
}

export interface SeriesPoint {
  t: number; // ms since start
  running: number; // devices running the release at this instant
  exposed: number; // devices that have ever installed it
  failed: number;
}

/** One rollout state change, at virtual time since the start. */
export interface TransitionView {
  at_ms: number;
  from: string;
  to: string;
  wave: string | null;
  why: string;
}

/** One signal's comparison in an evidence-gate look. */
export interface EvidenceSignalView {
  signal: string;
  verdict: string;
  critical: boolean;
  p: number | null; // one-sided Mann-Whitney U p-value; null with too few samples
  effect: number | null; // Cliff's delta, positive in the bad direction
  n_treatment: number;
  n_control: number;
}

/** One look of an evidence gate, as the rehearsal's control plane took it. */
export interface EvidenceLookView {
  at_ms: number;
  wave: string;
  look: number;
  verdict: string;
  installed: number; // devices that had installed the release at that moment
  status_after: string; // the rollout's status after the engine took the look
  signals: EvidenceSignalView[];
}

/**
 * When each gate would have fired (only for plans with evidence gates): the comparison gate in this rehearsal,
 * and a pure failure budget — the same rehearsal (same seed) with `compare` removed from every wave.
 */
export interface EvidenceGatesView {
  /** The baseline mean of each simulated signal (events per check-in). */
  signals: Array<{ name: string; mean: number }>;
  looks: EvidenceLookView[];
  /** The look that stopped the rollout (halted, rolled back, or asked for approval), or null: none did. */
  comparison: EvidenceLookView | null;
  failure_budget: {
    end_state: string;
    halted: boolean;
    at_ms: number | null; // when it halted
    wave: string | null;
    installed: number; // devices that had installed the release when it halted, or by the end
    reason: string | null;
    time_to_complete_ms: number | null;
  };
}

export interface RehearsalResult {
  plan: string;
  seed: string;
  fleet: number;
  faults: Array<{ spec: string; devices: number }>;
  settings: {
    poll_ms: number;
    apply_ms: [number, number];
    probation_ms: number; // health time
    tick_ms: number;
    time_to_report_ms: number; // the longest a healthy device takes from an offer to its report
    sources: TimingModel['sources'];
    start: string;
    emergency: boolean;
  };
  /** Waves whose report_deadline is shorter than the modelled time to report (healthy devices may miss it). */
  warnings: TimingWarning[];
  end_state: string;
  reason: string | null;
  halted_at_wave: string | null;
  waves: WaveOutcome[];
  exposed: number; // devices that installed the release
  exposed_percent: number;
  peak_running: number; // most devices running the release at the same instant
  peak_running_percent: number;
  time_to_halt_ms: number | null;
  time_to_complete_ms: number | null;
  virtual_ms: number; // virtual time until the simulation went quiet
  unfinished: string | null; // why the rehearsal stopped before a terminal state, if it did
  steps: number;
  device_events: number;
  transitions: TransitionView[];
  series: SeriesPoint[];
  /** Only when the plan has evidence gates (compare:). */
  evidence_gates?: EvidenceGatesView;
}
