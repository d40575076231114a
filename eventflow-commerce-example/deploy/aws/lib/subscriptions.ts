/**
 * The contexts' bus subscriptions as the app exports them: `subscriptions.json`, checked in by the
 * Rust side (`src/platform/lambda/artifacts.rs`, `subscriptions`; a test there keeps it equal to
 * what each context subscribes), `{ "<context>": [{ "subscription", "pattern" }] }`, each pattern
 * the EventBridge event pattern of the subscription's filter (`eventflow-bus/src/eventbridge.rs`,
 * `event_pattern`).
 *
 * The stack makes one rule per subscription, its pattern verbatim, targeting the context's
 * consumer queue: the queue gets exactly what the context's subscriptions select, and the
 * `consumer` function hands each message to every subscription whose filter selects it. A pattern
 * without `source` matches that detail-type from any source, on purpose: the saga participants'
 * patterns also select the state machine's commands (source `saga`).
 */
import { CONTEXTS, Context, FunctionName, consumerOf } from './contract';
import { SagaDocument, commandTypes } from './saga-definition';

export type EventPattern = Record<string, unknown>;

export interface Subscription {
  readonly context: Context;
  /** The subscription's name in the app; the rule is named after it (lib/names.ts). */
  readonly subscription: string;
  /** The EventBridge event pattern, as exported. */
  readonly pattern: EventPattern;
  /** The function whose queue the rule targets. */
  readonly consumer: FunctionName;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Parses `text` and checks what the stack relies on: only contexts with a `consumer` function (RUNS
 * in lib/contract.ts), each with at least one subscription, named once; every pattern a non-empty
 * object whose fields are arrays or objects (as EventBridge requires); and every context with a
 * consumer function present (its queue would get nothing otherwise).
 */
export function parseSubscriptions(text: string): Subscription[] {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (e) {
    throw new Error(`subscriptions.json is not JSON: ${(e as Error).message}`);
  }
  if (!isObject(document)) {
    throw new Error('subscriptions.json must be an object: { "<context>": [{ "subscription", "pattern" }] }');
  }
  const out: Subscription[] = [];
  for (const [context, list] of Object.entries(document)) {
    if (!(CONTEXTS as readonly string[]).includes(context)) {
      throw new Error(`subscriptions.json: ${JSON.stringify(context)} is not a context of CONTEXTS (lib/contract.ts)`);
    }
    let consumer: FunctionName;
    try {
      consumer = consumerOf(context);
    } catch (e) {
      throw new Error(`subscriptions.json subscribes ${context}, but ${(e as Error).message}`);
    }
    if (!Array.isArray(list) || list.length === 0) {
      throw new Error(`subscriptions.json: ${context} must list at least one subscription`);
    }
    const names = new Set<string>();
    for (const entry of list) {
      if (!isObject(entry) || typeof entry.subscription !== 'string' || entry.subscription === '') {
        throw new Error(`subscriptions.json: each entry of ${context} needs a "subscription" name`);
      }
      const { subscription, pattern } = entry;
      if (names.has(subscription)) {
        throw new Error(`subscriptions.json: ${context} has subscription ${subscription} twice`);
      }
      names.add(subscription);
      if (!isObject(pattern) || Object.keys(pattern).length === 0) {
        throw new Error(`subscriptions.json: ${context}/${subscription} needs a non-empty "pattern" object`);
      }
      for (const [field, value] of Object.entries(pattern)) {
        if (typeof value !== 'object' || value === null) {
          throw new Error(`subscriptions.json: ${context}/${subscription}: pattern field ${field} must be an array or an object`);
        }
      }
      out.push({ context: context as Context, subscription, pattern, consumer });
    }
  }
  for (const context of CONTEXTS) {
    let consumer: FunctionName | undefined;
    try {
      consumer = consumerOf(context);
    } catch {
      continue; // no consumer function: nothing to feed
    }
    if (!out.some((s) => s.context === context)) {
      throw new Error(`subscriptions.json has no subscription of ${context}, whose queue feeds ${consumer}`);
    }
  }
  return out;
}

/**
 * Whether `pattern` selects an event of `source` and `detailType`, judged on those two fields only
 * (exact values, as the app's patterns list them): an absent field selects any value; any other
 * field (a `detail` filter) is not judged, as if it selected the event.
 */
export function patternSelects(pattern: EventPattern, source: string, detailType: string): boolean {
  const allows = (field: string, value: string) => {
    const allowed = pattern[field];
    return allowed === undefined || (Array.isArray(allowed) && allowed.includes(value));
  };
  return allows('source', source) && allows('detail-type', detailType);
}

/**
 * The saga participants: for each command the state machine sends, the one context whose
 * subscriptions select it (the consumer that receives a command answers its task token, so two
 * would run it twice and none would leave the saga waiting). Returns the participants' consumer
 * functions with the commands each receives, in document order.
 */
export function participantsOf(doc: SagaDocument, subscriptions: readonly Subscription[]): Map<FunctionName, string[]> {
  const out = new Map<FunctionName, string[]>();
  for (const command of commandTypes(doc)) {
    const consumers = [
      ...new Set(subscriptions.filter((s) => patternSelects(s.pattern, doc.source, command)).map((s) => s.consumer)),
    ];
    if (consumers.length !== 1) {
      throw new Error(
        `saga command ${command} (source ${doc.source}) reaches ${consumers.length} consumers ` +
          `(${consumers.join(', ') || 'none'}) through subscriptions.json: exactly one context must subscribe to it`,
      );
    }
    out.set(consumers[0], [...(out.get(consumers[0]) ?? []), command]);
  }
  return out;
}
