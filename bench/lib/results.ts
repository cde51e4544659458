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
    notes: string[];
  };
  stop: StopResult[];
  start: StartResult[];
  guestsShutdown: GuestsShutdownResult[];
  reaction: ReactionResult;
  qmpScale: QmpScaleResult[];
  parallel: ParallelResult[];
  helpMs?: Summary;
  /** `node -e ''`: what any Node program pays before its first line. */
  nodeStartMs?: Summary;
  /** What our program printed in the last round of each scenario, each line with ms since its start: where its time went. */
  traces: Record<string, [number, string][]>;
  /** Wall time of the whole bench, s. */
  benchSeconds: number;
  errors: string[];
}
