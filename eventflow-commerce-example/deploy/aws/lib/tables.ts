/**
 * The DynamoDB tables: one pair per context, keyed exactly as the store crate creates them
 * (`eventflow-store-dynamodb/src/tables.rs`): events (`stream_id` S, `version` N) and meta (`pk` S,
 * `sk` S; idempotency keys, outbox entries, snapshots, read-model documents, checkpoints).
 */
import { RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import { Construct } from 'constructs';

import { CONTEXTS, Context, OUTBOX_CONTEXTS } from './contract';

export interface ContextTables {
  readonly events: dynamodb.Table;
  readonly meta: dynamodb.Table;
}

export interface TablesProps {
  readonly prefix: string;
  readonly removalPolicy: RemovalPolicy;
}

export class Tables extends Construct {
  readonly byContext: Record<Context, ContextTables>;

  constructor(scope: Construct, id: string, props: TablesProps) {
    super(scope, id);
    const table = (context: Context, kind: 'events' | 'meta') => {
      const keys =
        kind === 'events'
          ? {
              partitionKey: { name: 'stream_id', type: dynamodb.AttributeType.STRING },
              sortKey: { name: 'version', type: dynamodb.AttributeType.NUMBER },
            }
          : {
              partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
              sortKey: { name: 'sk', type: dynamodb.AttributeType.STRING },
            };
      return new dynamodb.Table(this, `${context}-${kind}`, {
        // The app derives the names (EVENTFLOW_TABLE_PREFIX + context), so they are fixed here.
        tableName: `${props.prefix}${context}-${kind}`,
        ...keys,
        // On-demand: nothing is billed while nobody calls.
        billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
        pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
        // Encrypted at rest with the AWS-owned key (the default): no KMS key to pay for.
        removalPolicy: props.removalPolicy,
        // The outbox relay reads the new outbox entries from the meta table's stream.
        stream:
          kind === 'meta' && OUTBOX_CONTEXTS.includes(context) ? dynamodb.StreamViewType.NEW_IMAGE : undefined,
      });
    };
    this.byContext = Object.fromEntries(
      CONTEXTS.map((context) => [context, { events: table(context, 'events'), meta: table(context, 'meta') }]),
    ) as Record<Context, ContextTables>;
  }
}
