// The QMP layer: the generic line runner, the QMP client and its events, the QMP driver.
export { abortError, isDeadlineReason } from './abort.js';
export { LineProtocol, DEFAULT_MAX_LINE_BYTES, type LineProtocolOptions, type RunnerState } from './line-protocol.js';
export { QmpClient, QmpCommandError, connectQmp, withQmp, type QmpClientOptions, type QmpGreeting } from './qmp-client.js';
export { type QmpEvent, type QmpEventListener } from './qmp-events.js';
export { createQmpDriver, type QmpDriverOptions } from './qmp-driver.js';
export {
  GuestDefinitionError,
  loadDefinition,
  parseDefinition,
  listDefinitionFiles,
  memoryFromArgv,
  saveBlockersOf,
  RESERVED_OPTIONS,
  type QmpGuestDefinition,
} from './guest-definition.js';
export { UnsafePathError, ensurePrivateDir } from './private-dir.js';
