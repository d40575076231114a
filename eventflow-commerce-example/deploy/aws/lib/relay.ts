/**
 * The outbox relay: the store writes each published event's outbox entry (`pk` = `outbox#<shard>`)
 * in the same transaction as the event; a new entry on the meta table's stream invokes the
 * `outbox-relay` function, which publishes what that context's outbox holds (reading the events
 * from the events table), then deletes the entries (`src/platform/lambda/relay.rs`). No dual
 * write, and nothing polls.
 */
import { Duration } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sources from 'aws-cdk-lib/aws-lambda-event-sources';
import * as sqs from 'aws-cdk-lib/aws-sqs';

import { Context, OUTBOX_PK_PREFIX } from './contract';
import { ContextTables } from './tables';

/** Retries of a failing batch before it goes to the on-failure queue (bisected on the way). */
export const RELAY_RETRY_ATTEMPTS = 10;

/**
 * Only new outbox entries reach the function: inserts whose `pk` begins with `outbox#`. The
 * relay's own deletes, read-model documents, checkpoints, snapshots, idempotency keys and parked
 * entries (`outbox-parked`) are filtered out by Lambda before any invocation.
 */
export const OUTBOX_FILTER = lambda.FilterCriteria.filter({
  eventName: lambda.FilterRule.isEqual('INSERT'),
  dynamodb: { Keys: { pk: { S: lambda.FilterRule.beginsWith(OUTBOX_PK_PREFIX) } } },
});

export function wireOutboxRelay(
  relay: lambda.Function,
  tables: Partial<Record<Context, ContextTables>>,
  onFailure: sqs.IQueue,
): void {
  for (const [, { events, meta }] of Object.entries(tables) as [Context, ContextTables][]) {
    // Reads the event an entry points at; deletes the entry once published.
    events.grantReadData(relay);
    meta.grantReadWriteData(relay);
    relay.addEventSource(
      new sources.DynamoEventSource(meta, {
        // Oldest first: an entry written while the function was being deployed is not skipped.
        startingPosition: lambda.StartingPosition.TRIM_HORIZON,
        batchSize: 10,
        filters: [OUTBOX_FILTER],
        // The relay publishes the table's whole outbox, whatever the records say, and fails the
        // invocation when it cannot (no per-record answer): a failed batch is retried whole.
        bisectBatchOnError: true,
        retryAttempts: RELAY_RETRY_ATTEMPTS,
        maxRecordAge: Duration.hours(6),
        // One batch at a time per shard keeps a stream's events in order.
        parallelizationFactor: 1,
        // What never made it: the queue gets the shard and sequence numbers of the batch; the
        // entries themselves stay in the outbox for the relay to publish later.
        onFailure: new sources.SqsDlq(onFailure),
      }),
    );
  }
}
