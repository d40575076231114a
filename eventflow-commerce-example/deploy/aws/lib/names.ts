/**
 * AWS resource names as the app makes them (`eventflow-bus/src/aws.rs`, `resource_name`): the
 * parts joined, every character AWS does not accept replaced by `-`, and a name longer than the
 * limit cut short with a stable hash of the whole (64-bit FNV-1a, 16 hex digits) appended, so two
 * long names stay distinct. Rule names here are the app's own (`eventflow-bus/src/eventbridge.rs`,
 * `rule_name`: `<resource prefix><subscription>`, at most 64 characters, dots allowed).
 */

/** EventBridge: a rule name has 1 to 64 of `[.\-_A-Za-z0-9]`. */
export const MAX_RULE_NAME = 64;
export const RULE_NAME = /^[.\-_A-Za-z0-9]{1,64}$/;

/** SQS: a queue name has 1 to 80 of `[-_A-Za-z0-9]`. */
export const MAX_QUEUE_NAME = 80;
export const QUEUE_NAME = /^[-_A-Za-z0-9]{1,80}$/;

/** 64-bit FNV-1a of `bytes`, as 16 hex digits. */
export function fnv1a(bytes: Uint8Array): string {
  const mask = (1n << 64n) - 1n;
  let hash = 0xcbf29ce484222325n;
  for (const byte of bytes) {
    hash = ((hash ^ BigInt(byte)) * 0x100000001b3n) & mask;
  }
  return hash.toString(16).padStart(16, '0');
}

/** `parts` joined into a name of at most `max` characters (see above). */
export function resourceName(parts: readonly string[], max: number, dots: boolean): string {
  const full = parts.join('');
  let clean = '';
  for (const c of full) {
    clean += /^[A-Za-z0-9_-]$/.test(c) || (dots && c === '.') ? c : '-';
  }
  if (clean.length <= max) {
    return clean;
  }
  const hash = fnv1a(new TextEncoder().encode(full));
  return `${clean.slice(0, Math.max(0, max - hash.length - 1))}-${hash}`;
}

/** The EventBridge rule of subscription `subscription`: `<prefix><subscription>`, as the app names it. */
export function ruleName(prefix: string, subscription: string): string {
  return resourceName([prefix, subscription], MAX_RULE_NAME, true);
}
