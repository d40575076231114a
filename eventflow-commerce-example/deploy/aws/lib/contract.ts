/**
 * The names this deployment shares with the Rust side. Each is copied from the code it must match;
 * the comment next to it says where. When the Rust side changes one, change it here.
 */

/**
 * The bounded contexts with a table pair (`eventflow-commerce-example/src/platform/config.rs`,
 * `CloudSettings::tables_of`: `<prefix><context>-events` and `<prefix><context>-meta`). The saga
 * orchestrator has none here: Step Functions keeps the saga state.
 */
export const CONTEXTS = [
  'identity',
  'catalog',
  'ordering',
  'payment',
  'inventory',
  'shipping',
  'notification',
] as const;
export type Context = (typeof CONTEXTS)[number];

/**
 * The contexts whose repositories write outbox entries (`infra.repository(true)`): identity
 * (customers), catalog (products), ordering (orders). Payment, inventory and shipping record with
 * `repository(false)`/`snapshotted` and answer the saga directly, so their meta tables never hold
 * an `outbox#` item and get no stream. Add a context here when it starts publishing events.
 */
export const OUTBOX_CONTEXTS: readonly Context[] = ['identity', 'catalog', 'ordering'];

/** The table prefix the app uses by default (`EVENTFLOW_TABLE_PREFIX`, default `commerce-`). */
export const DEFAULT_TABLE_PREFIX = 'commerce-';

/**
 * The prefix of the queue names the app opens (`EVENTFLOW_RESOURCE_PREFIX`,
 * `eventflow-bus/src/config.rs`, `work_queue_from_lookup`: the queue `<prefix><name>`) and of the
 * rule names (`eventflow-bus/src/eventbridge.rs`, `rule_name`). The same as the table prefix by
 * default.
 */
export const DEFAULT_RESOURCE_PREFIX = 'commerce-';

/** The partition-key prefix of outbox entries in a meta table (`eventflow-store-dynamodb/src/items.rs`). */
export const OUTBOX_PK_PREFIX = 'outbox#';

/** The custom EventBridge bus. */
export const BUS_NAME = 'eventflow-commerce';

/** The functions of the stack, by the name used in construct ids, tags and alarms. */
export const FUNCTIONS = [
  'auth-login',
  'catalog-get',
  'orders-post',
  'orders-get',
  'authorizer',
  'saga-starter',
  'inventory-commands',
  'payment-commands',
  'shipping-commands',
  'ordering-commands',
  'catalog-events',
  'notification-worker',
  'outbox-relay',
] as const;
export type FunctionName = (typeof FUNCTIONS)[number];

/**
 * Values of `EVENTFLOW_HANDLER` the binary accepts (`src/platform/lambda/mod.rs`,
 * `Handler::parse`).
 */
export type RustHandler = 'http' | 'authorizer' | 'consumer' | 'outbox-relay' | 'saga-starter';

/**
 * What the binary runs in each function: `EVENTFLOW_HANDLER`, and `EVENTFLOW_CONTEXT` for the
 * handlers that start a context (`http`: the context's router; `consumer`: the context's bus
 * subscriptions and its saga participant, which answers the state machine's task tokens).
 */
export const RUNS: Record<FunctionName, { handler: RustHandler; context?: Context }> = {
  'auth-login': { handler: 'http', context: 'identity' },
  'catalog-get': { handler: 'http', context: 'catalog' },
  'orders-post': { handler: 'http', context: 'ordering' },
  'orders-get': { handler: 'http', context: 'ordering' },
  authorizer: { handler: 'authorizer' },
  'saga-starter': { handler: 'saga-starter' },
  'inventory-commands': { handler: 'consumer', context: 'inventory' },
  'payment-commands': { handler: 'consumer', context: 'payment' },
  'shipping-commands': { handler: 'consumer', context: 'shipping' },
  'ordering-commands': { handler: 'consumer', context: 'ordering' },
  'catalog-events': { handler: 'consumer', context: 'catalog' },
  'notification-worker': { handler: 'consumer', context: 'notification' },
  'outbox-relay': { handler: 'outbox-relay' },
};

/** The functions API Gateway invokes with a REST proxy event. */
export const HTTP_FUNCTIONS = ['auth-login', 'catalog-get', 'orders-post', 'orders-get'] as const;
export type HttpFunction = (typeof HTTP_FUNCTIONS)[number];

/**
 * Functions that read the JWT secret: identity signs, the authorizer verifies at the edge,
 * ordering's handlers verify again, and every HTTP service starts with the app's verifier (its
 * router has it for any route that asks for a token), catalog's too, though its routes are open.
 */
export const JWT_FUNCTIONS: readonly FunctionName[] = ['auth-login', 'authorizer', 'catalog-get', 'orders-post', 'orders-get'];

/**
 * Which function serves an operation of the app's OpenAPI document. Catalog's routes are
 * `/catalog` and `/catalog/{productId}` (`src/catalog/http.rs`), ordering's `/orders` and
 * `/orders/{orderId}` (`src/ordering/http.rs`), identity's `/auth/login` (`src/identity/http.rs`).
 * An operation no route claims is an error: the document and this table must agree.
 */
export const HTTP_ROUTES: readonly { method: string; path: RegExp; fn: HttpFunction }[] = [
  { method: 'post', path: /^\/auth\/login$/, fn: 'auth-login' },
  { method: 'get', path: /^\/catalog(\/\{[^/]+\})?$/, fn: 'catalog-get' },
  { method: 'post', path: /^\/orders$/, fn: 'orders-post' },
  { method: 'get', path: /^\/orders(\/\{[^/]+\})?$/, fn: 'orders-get' },
];

/** The function serving `method path`, or an error naming the operation. */
export function functionOf(method: string, path: string): HttpFunction {
  const route = HTTP_ROUTES.find((r) => r.method === method.toLowerCase() && r.path.test(path));
  if (!route) {
    throw new Error(
      `the OpenAPI document has ${method.toUpperCase()} ${path}, which no function serves: ` +
        'add it to HTTP_ROUTES in lib/contract.ts or remove it from api-gateway/openapi.json',
    );
  }
  return route.fn;
}

/**
 * The functions an SQS queue feeds: each consuming context's `consumer` (its queue gets one rule
 * per subscription of the context, from `subscriptions.json`: lib/subscriptions.ts) and the saga
 * starter (its own rule, {@link SAGA_TRIGGER}).
 */
export const QUEUE_CONSUMERS: readonly FunctionName[] = FUNCTIONS.filter(
  (f) => RUNS[f].handler === 'consumer' || RUNS[f].handler === 'saga-starter',
);

/** The `consumer` function of `context`: the one function RUNS gives that context's consumer. */
export function consumerOf(context: string): FunctionName {
  const found = FUNCTIONS.filter((f) => RUNS[f].handler === 'consumer' && RUNS[f].context === context);
  if (found.length !== 1) {
    throw new Error(
      `context ${JSON.stringify(context)} has ${found.length} consumer functions (${found.join(', ') || 'none'}): ` +
        'RUNS in lib/contract.ts must give each consuming context exactly one',
    );
  }
  return found[0];
}

/**
 * What starts PlaceOrder: ordering's `OrderPlaced` (`src/orchestration/infrastructure.rs`, the
 * trigger accepts source `ordering` only). Not an exported subscription (the orchestrator's
 * trigger is not a context's consumer): saga-starter's queue gets this one rule.
 */
export const SAGA_TRIGGER = {
  name: 'saga-starter',
  pattern: { source: ['ordering'], 'detail-type': ['OrderPlaced'] },
} as const;

/**
 * Consumers whose queue is also a work queue the app opens by name at start, with
 * `EVENTFLOW_PROVISION=false` (`eventflow-bus/src/sqs.rs`, `SqsWorkQueue::open`): notification's
 * `notifications` (`src/notification/infrastructure.rs`, `QueueSettings::new("notifications")`).
 * The queue is named `<resource prefix><name>`, its dead-letter queue `<resource prefix><name>-dlq`
 * (the app's convention, `SqsWorkQueue::provision`), and the function gets
 * `EVENTFLOW_RESOURCE_PREFIX` and what opening the queue calls.
 */
export const WORK_QUEUES: Partial<Record<FunctionName, string>> = {
  'notification-worker': 'notifications',
};

/**
 * A consumer publishes what its batch recorded right after the batch (`consume` calls the
 * context's outbox relay), so the consumers of the contexts that publish (OUTBOX_CONTEXTS) may
 * put events on the bus; the stream relay publishes whatever they leave.
 */
export function relaysInline(fn: FunctionName): boolean {
  const { handler, context } = RUNS[fn];
  return handler === 'consumer' && context !== undefined && OUTBOX_CONTEXTS.includes(context);
}

/**
 * How many receives a message gets before its queue dead-letters it: the app's notification
 * queue uses 5 (`src/notification/infrastructure.rs`, `MAX_RECEIVES`); every queue here does.
 */
export const MAX_RECEIVES = 5;

/**
 * The app's development JWT secret (`src/platform/config.rs`, `DEV_JWT_SECRET`): it must never
 * reach a deployed template.
 */
export const DEV_JWT_SECRET = 'eventflow-dev-secret-do-not-use-in-production';
