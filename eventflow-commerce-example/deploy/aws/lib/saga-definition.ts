/**
 * Reading the PlaceOrder state machine document (Amazon States Language) the saga crate exports
 * (`eventflow-saga/src/step_functions.rs`): which commands it sends, from which source, to which
 * bus. Each command must reach exactly one context's queue through that context's subscriptions
 * (lib/subscriptions.ts, `participantsOf`), whose consumer then may answer the task token.
 */

/** The placeholder the document carries where the bus name goes (`definitionSubstitutions`). */
export const BUS_PLACEHOLDER = '${EventBusName}';
export const BUS_SUBSTITUTION = 'EventBusName';

/** The callback-pattern task every saga step uses. */
export const PUT_EVENTS_WAIT = 'arn:aws:states:::events:putEvents.waitForTaskToken';

/** One command the state machine sends: a `putEvents` entry of one of its tasks. */
export interface SagaCommand {
  readonly state: string;
  readonly source: string;
  readonly detailType: string;
  readonly eventBusName: string;
}

export interface SagaDocument {
  /** The document as parsed. */
  readonly definition: Record<string, unknown>;
  readonly commands: readonly SagaCommand[];
  /** The one `Source` every command carries. */
  readonly source: string;
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Parses `text` and checks what the deployment relies on: `StartAt` and `States`; every task
 * either sends its commands to the bus placeholder with one common source, or is not a
 * `putEvents` task at all (a Lambda task would need permissions this stack does not grant, so it
 * is refused with a message).
 */
export function parseSagaDocument(text: string): SagaDocument {
  let definition: unknown;
  try {
    definition = JSON.parse(text);
  } catch (e) {
    throw new Error(`the state machine document is not JSON: ${(e as Error).message}`);
  }
  if (!isObject(definition) || typeof definition.StartAt !== 'string' || !isObject(definition.States)) {
    throw new Error('the state machine document needs StartAt and States');
  }
  const commands: SagaCommand[] = [];
  for (const [state, body] of Object.entries(definition.States)) {
    if (!isObject(body) || body.Type !== 'Task') {
      continue;
    }
    if (body.Resource !== PUT_EVENTS_WAIT && body.Resource !== 'arn:aws:states:::events:putEvents') {
      throw new Error(`state ${state}: resource ${String(body.Resource)} is not an EventBridge putEvents task`);
    }
    const entries = isObject(body.Parameters) ? body.Parameters.Entries : undefined;
    if (!Array.isArray(entries) || entries.length === 0) {
      throw new Error(`state ${state}: Parameters.Entries is missing`);
    }
    for (const entry of entries) {
      if (!isObject(entry) || typeof entry.Source !== 'string' || typeof entry.DetailType !== 'string') {
        throw new Error(`state ${state}: each entry needs a literal Source and DetailType`);
      }
      if (entry.EventBusName !== BUS_PLACEHOLDER) {
        throw new Error(
          `state ${state}: EventBusName is ${JSON.stringify(entry.EventBusName)}, expected the placeholder ${BUS_PLACEHOLDER}`,
        );
      }
      commands.push({ state, source: entry.Source, detailType: entry.DetailType, eventBusName: entry.EventBusName });
    }
  }
  const sources = [...new Set(commands.map((c) => c.source))];
  if (sources.length !== 1) {
    throw new Error(`the state machine's commands must share one Source, found ${JSON.stringify(sources)}`);
  }
  return { definition, commands, source: sources[0] };
}

/** The distinct command types, in document order. */
export function commandTypes(doc: SagaDocument): string[] {
  return [...new Set(doc.commands.map((c) => c.detailType))];
}

/** `text` with the bus placeholder replaced, as Step Functions will see it. */
export function substituteBus(text: string, busName: string): string {
  return text.split(BUS_PLACEHOLDER).join(busName);
}
