/**
 * iBFT: locate, decode, validate, encode and plan from the iSCSI Boot
 * Firmware Table. The one import for other layers.
 *
 * @example
 * ```ts
 * import { loadIbft, makeBootPlan } from "../ibft/mod.ts";
 * const loaded = await loadIbft("auto");
 * const plan = makeBootPlan(loaded.table);
 * ```
 *
 * @module
 */
export type {
  ChapType,
  IbftControl,
  IbftHeader,
  IbftInitiator,
  IbftNic,
  IbftTable,
  IbftTarget,
  LoadedIbft,
  Origin,
} from "./model.ts";
export { decodeIbft, type DecodeOptions, ibftChecksum } from "./decode.ts";
export { encodeIbft } from "./encode.ts";
export { ibftFromJson, ibftToJson, type JsonOptions, REDACTED } from "./json.ts";
export {
  IbftNotFoundError,
  loadAcpi,
  loadAuto,
  loadFile,
  loadIbft,
  loadMem,
  type LoadOptions,
  loadSysfs,
  loadSysfsDir,
  SOURCE_NAMES,
  type SourceRoots,
} from "./sources.ts";
export { readSysfsIbft } from "./sysfs.ts";
export { type BootPlan, makeBootPlan, type PlannedTarget, portalText } from "./plan.ts";
export { lunBytes, lunFromHex, lunNumber } from "./fields.ts";
