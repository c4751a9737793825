/** The audit chain's public surface: writer, verifier, schemas, keys and errors. */

export { canonicalJson } from "../canonical-json.js";
export {
  type AppendReceipt,
  AUDIT_SYNC_MODES,
  AuditChain,
  type AuditChainOptions,
  type AuditSyncMode,
  type SigningStrategy,
} from "./chain.js";
export {
  AUDIT_DECISIONS,
  AUDIT_LAYERS,
  type AuditEntry,
  type AuditEntryInput,
  AuditEntryInputSchema,
  AuditEntrySchema,
  type AuditLayer,
  type AuditRecord,
  AuditRecordSchema,
  computeEntryHash,
  GENESIS_HASH,
  hashArgs,
  type SealRecord,
  SealRecordSchema,
  type SegmentHeader,
  SegmentHeaderSchema,
} from "./entry.js";
export { AuditCorruptError, AuditInputError, AuditLockedError, AuditWriteError } from "./errors.js";
export { AuditKeyring, signChainHash, verifyChainHash } from "./signature.js";
export {
  CHAIN_START,
  type ChainError,
  type ChainErrorKind,
  type ChainPosition,
  ChainVerifier,
  type VerifyOptions,
  type VerifyResult,
  verifyChain,
  verifyEntries,
} from "./verify.js";
