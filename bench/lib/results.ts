// The shape of a benchmark run's JSON (bench/results/*.json), from which docs/benchmarks.md is drawn.
import type { MachineInfo } from './machine.js';
import type { Summary } from './stats.js';

/** stop with N guests: ours against the floor, libvirt-guests.sh and the original's waiting. */
export interface StopResult {
  n: number;
  floorSaveMs: Summary;
  floorDaemonsMs: Summary;
  floorMs: Summary;
  oursMs: Summary;
  libvirtGuestsSuspendMs: Summary;
  /** The original script's waiting, modelled from each floor run (see docs/benchmarks.md). */
  originalModelMs: Summary;
}

/** start (restore) after stop with N guests. */
export interface StartResult {
  n: number;
  floorAnswerMs: Summary;
  floorAllRunningMs: Summary;
  oursAnswerMs: Summary;
  oursAllRunningMs: Summary;
  /** libvirt-guests.sh start (ON_BOOT=start) with libvirtd already up: restore only. */
  libvirtGuestsStartMs: Summary;
  floorRestoreMs: Summary;
  oursRestoreMs: Summary;
}

/** guests_shutdown with N guests. */
export interface GuestsShutdownResult {
  n: number;
  floorMs: Summary;
  oursMs: Summary;
  /** libvirt-guests.sh stop with ON_SHUTDOWN=shutdown PARALLEL_SHUTDOWN=N. */
  libvirtGuestsShutdownMs: Summary;
  originalModelMs: Summary;
}

/** Reaction: from a lifecycle event's timestamp (an independent `virsh event`) to our noticing it. */
export interface ReactionResult {
  /** In-process: the libvirt driver's waitForState resolving after `virsh suspend`/`resume` (Suspended/Resumed events). */
  driverPauseResumeMs?: Summary;
  /** In-process: waitForState(shutoff) resolving after `virsh shutdown` (the Stopped event). */
  driverStopMs?: Summary;
  /** How the driver's waits ended: by event, by poll, at once. */
  driverWaits?: { byEvent: number; byPoll: number; immediate: number };
  /** The command line: `rc.libvirt guests_shutdown` printing a guest's result after its Stopped event. */
  cliMs?: Summary;
}

/** The qmp driver at scale. */
export interface QmpScaleResult {
  n: number;
  /** Starts with nothing saved: every guest started afresh (autostart). */
  freshStartMs: Summary;
  /** One start after a stop: every guest restored from what stop saved. */
  restoreStartMs: number;
  /** Guests that start failed to restore (the run goes on with fresh starts). */
  restoreFailed: number;
  stopMs: Summary;
  stopPeakRssMiB: Summary;
  startPeakRssMiB: Summary;
}

/** stop of the filled guests at one PARALLEL setting. */
export interface ParallelResult {
  parallel: number;
  n: number;
  oursMs: Summary;
}

/** Spawn to our program's first guest action (first save, shutdown request or restore), from the stamped output of every round. */
export interface FirstActionResult {
  scenario: 'stop' | 'start' | 'guests_shutdown';
  n: number;
  /** ms from the spawn to the first action's line. */
  ms: Summary;
  /** start only: ms from libvirtd answering (our `libvirtd answers` line) to the first restore. */
  afterAnswerMs?: Summary;
}

/** The listing (`rc.libvirt plan --json`) with N guests defined and running. */
export interface ScaleListingResult {
  n: number;
  /** virsh processes one `plan --json` spawned (counted by a VIRSH wrapper), by virsh command. */
  virshCalls: number;
  virshByCommand: Record<string, number>;
  /** Wall time of `plan --json` without the wrapper. */
  ms: Summary;
  /** Runs that exited non-zero (still timed and counted): which, and what they said. */
  failures?: string[];
}

/** stop and start of N firmware guests: ours against the floor. */
export interface ScaleCompareResult {
  n: number;
  floorStopMs: Summary;
  oursStopMs: Summary;
  floorStartMs: Summary;
  oursStartMs: Summary;
  oursStopPeakRssMiB: Summary;
  oursStartPeakRssMiB: Summary;
}

/** libvirt at scale: small guests that sit in their firmware. */
export interface LibvirtScaleResult {
  memMiB: number;
  listing: ScaleListingResult[];
  compare: ScaleCompareResult[];
}

/** A whole run. */
export interface BenchResults {
  mode: 'quick' | 'full';
  machine: MachineInfo;
  config: {
    guestCounts: number[];
    reps: number;
    shutdownReps: number;
    memMiB: number;
    fill: number;
    qmpCounts: number[];
    qmpReps: number;
    parallelSettings: number[];
    helpSpawns: number;
    /** Absent in runs recorded before the scale part existed. */
    scaleCounts?: number[];
    scaleCompareCounts?: number[];
    scaleReps?: number;
    scaleListingReps?: number;
    scaleMemMiB?: number;
    notes: string[];
  };
  stop: StopResult[];
  start: StartResult[];
  guestsShutdown: GuestsShutdownResult[];
  reaction: ReactionResult;
  qmpScale: QmpScaleResult[];
  parallel: ParallelResult[];
  /** Absent in runs recorded before it was measured. */
  firstAction?: FirstActionResult[];
  libvirtScale?: LibvirtScaleResult;
  helpMs?: Summary;
  /** `node -e ''`: what any Node program pays before its first line. */
  nodeStartMs?: Summary;
  /** What our program printed in the last round of each scenario, each line with ms since its start: where its time went. */
  traces: Record<string, [number, string][]>;
  /** Wall time of the whole bench, s. */
  benchSeconds: number;
  errors: string[];
}

// A run with nothing measured yet.
export function emptyResults(mode: BenchResults['mode'], machine: MachineInfo, config: BenchResults['config']): BenchResults {
  return { mode, machine, config, stop: [], start: [], guestsShutdown: [], reaction: {}, qmpScale: [], parallel: [], traces: {}, benchSeconds: 0, errors: [] };
}
