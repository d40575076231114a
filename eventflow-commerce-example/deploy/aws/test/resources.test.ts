/** What the stack creates: counts, tables, queues, rules, event sources, outputs. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import { Match } from 'aws-cdk-lib/assertions';

import { DEFAULT_ASL, DEFAULT_SUBSCRIPTIONS, DEPLOY_DIR } from '../lib/config';
import {
  CONTEXTS,
  FUNCTIONS,
  MAX_RECEIVES,
  OUTBOX_CONTEXTS,
  OUTBOX_PK_PREFIX,
  QUEUE_CONSUMERS,
  SAGA_TRIGGER,
} from '../lib/contract';
import { RULE_NAME, ruleName } from '../lib/names';
import { commandTypes, parseSagaDocument } from '../lib/saga-definition';
import { RELAY_RETRY_ATTEMPTS } from '../lib/relay';
import { QUEUE_BATCH_SIZE } from '../lib/stack';
import { parseSubscriptions, patternSelects } from '../lib/subscriptions';
import {
  Json,
  defaultTemplate,
  dlqIdOf,
  fnOf,
  queueIdOf,
  readJson,
  referencedIds,
  resourcesOf,
  synth,
  tableId,
} from './helpers';

const template = defaultTemplate();
const queues = resourcesOf(template, 'AWS::SQS::Queue');
/** Queues some other queue names as its dead-letter target, plus the queues used as DLQs elsewhere. */
const dlqIds = new Set<string>([
  ...queues.flatMap(([, q]) => [...referencedIds(q.Properties.RedrivePolicy ?? {})]),
  ...resourcesOf(template, 'AWS::Events::Rule').flatMap(([, r]) =>
    r.Properties.Targets.flatMap((t: Json) => [...referencedIds(t.DeadLetterConfig ?? {})]),
  ),
  ...resourcesOf(template, 'AWS::Lambda::EventSourceMapping').flatMap(([, m]) => [
    ...referencedIds(m.Properties.DestinationConfig ?? {}),
  ]),
]);
const queueConsumers = QUEUE_CONSUMERS;
const saga = parseSagaDocument(readFileSync(path.join(DEPLOY_DIR, DEFAULT_ASL), 'utf8'));
const subscriptions = parseSubscriptions(readFileSync(path.join(DEPLOY_DIR, DEFAULT_SUBSCRIPTIONS), 'utf8'));

describe('resource counts', () => {
  const counts: [string, number][] = [
    ['AWS::DynamoDB::Table', 2 * CONTEXTS.length],
    ['AWS::Lambda::Function', FUNCTIONS.length],
    // Each queue consumer: its queue and DLQ; plus the rule targets' DLQ and the relay's failures.
    ['AWS::SQS::Queue', 2 * queueConsumers.length + 2],
    // One per subscription in subscriptions.json, plus the saga starter's.
    ['AWS::Events::Rule', subscriptions.length + 1],
    ['AWS::Events::EventBus', 1],
    ['AWS::StepFunctions::StateMachine', 1],
    ['AWS::ApiGateway::RestApi', 1],
    ['AWS::SecretsManager::Secret', 1],
    // 9 dead-letter queues + 2 saga + 1 per function but the authorizer.
    ['AWS::CloudWatch::Alarm', queueConsumers.length + 2 + 2 + FUNCTIONS.length - 1],
    ['AWS::Lambda::EventSourceMapping', queueConsumers.length + OUTBOX_CONTEXTS.length],
    ['AWS::SNS::Topic', 1],
  ];
  for (const [type, n] of counts) {
    it(`${n} x ${type}`, () => template.resourceCountIs(type, n));
  }
});

describe('tables', () => {
  for (const context of CONTEXTS) {
    it(`${context}: events and meta, keyed as the store creates them, on demand, with PITR`, () => {
      template.hasResource('AWS::DynamoDB::Table', {
        Properties: {
          TableName: `commerce-${context}-events`,
          KeySchema: [
            { AttributeName: 'stream_id', KeyType: 'HASH' },
            { AttributeName: 'version', KeyType: 'RANGE' },
          ],
          AttributeDefinitions: [
            { AttributeName: 'stream_id', AttributeType: 'S' },
            { AttributeName: 'version', AttributeType: 'N' },
          ],
          BillingMode: 'PAY_PER_REQUEST',
          PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
          StreamSpecification: Match.absent(),
        },
        DeletionPolicy: 'Retain',
      });
      template.hasResource('AWS::DynamoDB::Table', {
        Properties: {
          TableName: `commerce-${context}-meta`,
          KeySchema: [
            { AttributeName: 'pk', KeyType: 'HASH' },
            { AttributeName: 'sk', KeyType: 'RANGE' },
          ],
          BillingMode: 'PAY_PER_REQUEST',
          PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
          StreamSpecification: OUTBOX_CONTEXTS.includes(context)
            ? { StreamViewType: 'NEW_IMAGE' }
            : Match.absent(),
        },
      });
    });
  }
});

describe('queues', () => {
  it('every queue but a dead-letter queue has a redrive policy to one', () => {
    const working = queues.filter(([id]) => !dlqIds.has(id));
    assert.equal(working.length, queueConsumers.length);
    for (const [id, q] of working) {
      assert.equal(q.Properties.RedrivePolicy?.maxReceiveCount, MAX_RECEIVES, id);
      const [target] = referencedIds(q.Properties.RedrivePolicy.deadLetterTargetArn);
      assert.ok(dlqIds.has(target) && !queues.find(([i]) => i === target)![1].Properties.RedrivePolicy, id);
    }
    for (const id of dlqIds) {
      assert.equal(template.findResources('AWS::SQS::Queue')[id].Properties.RedrivePolicy, undefined, id);
    }
  });

  it('every queue is encrypted and refuses plain HTTP', () => {
    const policies = resourcesOf(template, 'AWS::SQS::QueuePolicy');
    for (const [id, q] of queues) {
      assert.equal(q.Properties.SqsManagedSseEnabled, true, id);
      const denies = policies.some(
        ([, p]) =>
          [...referencedIds(p.Properties.Queues)].includes(id) &&
          p.Properties.PolicyDocument.Statement.some(
            (s: Json) => s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false',
          ),
      );
      assert.ok(denies, `${id} accepts plain HTTP`);
    }
  });

  it('a queue hides a message at least as long as its function may run', () => {
    for (const handler of queueConsumers) {
      const fn = fnOf(template, handler);
      const mapping = resourcesOf(template, 'AWS::Lambda::EventSourceMapping').find(
        ([, m]) => m.Properties.FunctionName.Ref === fn.id,
      )!;
      const queueId = [...referencedIds(mapping[1].Properties.EventSourceArn)][0];
      const queue = template.findResources('AWS::SQS::Queue')[queueId];
      assert.ok(queue.Properties.VisibilityTimeout >= fn.resource.Properties.Timeout, handler);
    }
  });
});

describe('rules', () => {
  const rules = resourcesOf(template, 'AWS::Events::Rule');
  const targetsOf = (rule: Json) => rule.Properties.Targets.map((t: Json) => [...referencedIds(t.Arn)][0]);
  const rulesTo = (handler: string) => {
    const queueId = queueIdOf(template, handler);
    return rules.filter(([, r]) => targetsOf(r).includes(queueId));
  };

  it('one per subscription in subscriptions.json (12 with the saga starter\'s)', () => {
    assert.equal(rules.length, 12);
    assert.equal(subscriptions.length, 11);
    assert.deepEqual(
      [...new Set(subscriptions.map((s) => s.context))].sort(),
      ['catalog', 'inventory', 'notification', 'ordering', 'payment', 'shipping'],
    );
  });

  it('are on the custom bus, target one queue each, and every target has a dead-letter queue and a retry policy', () => {
    const [busId] = resourcesOf(template, 'AWS::Events::EventBus')[0];
    for (const [id, r] of rules) {
      assert.ok(referencedIds(r.Properties.EventBusName).has(busId), id);
      assert.equal(r.Properties.Targets.length, 1, id);
      for (const t of r.Properties.Targets) {
        assert.ok(t.DeadLetterConfig?.Arn, `${id} target has no DLQ`);
        assert.ok(t.RetryPolicy?.MaximumRetryAttempts > 0, `${id} target has no retry policy`);
      }
    }
  });

  it('are named as the app names them, within EventBridge\'s limits, each name once', () => {
    const names = rules.map(([, r]) => r.Properties.Name as string);
    for (const name of names) assert.match(name, RULE_NAME);
    assert.equal(new Set(names).size, names.length);
    assert.deepEqual(
      [...names].sort(),
      [SAGA_TRIGGER.name, ...subscriptions.map((s) => s.subscription)].map((n) => `commerce-${n}`).sort(),
    );
  });

  for (const s of subscriptions) {
    it(`${s.context}/${s.subscription}: exactly one rule, its pattern verbatim, to ${s.consumer}'s queue`, () => {
      const queueId = queueIdOf(template, s.consumer);
      const samePattern = (r: Json) => {
        try {
          assert.deepStrictEqual(r.EventPattern, s.pattern);
          return true;
        } catch {
          return false;
        }
      };
      const found = rulesTo(s.consumer).filter(([, r]) => samePattern(r.Properties));
      assert.equal(found.length, 1, JSON.stringify(s.pattern));
      const [, rule] = found[0];
      assert.deepEqual(targetsOf(rule), [queueId]);
      assert.equal(rule.Properties.Name, ruleName('commerce-', s.subscription));
      assert.equal(rule.Properties.Description, `${s.context}: ${s.subscription}`);
    });
  }

  it('no other rule targets a consumer queue', () => {
    for (const handler of queueConsumers) {
      const expected =
        handler === 'saga-starter' ? 1 : subscriptions.filter((s) => s.consumer === handler).length;
      assert.equal(rulesTo(handler).length, expected, handler);
    }
    const consumerQueues = new Set(queueConsumers.map((h) => queueIdOf(template, h)));
    const toConsumers = rules.filter(([, r]) => targetsOf(r).some((q: string) => consumerQueues.has(q)));
    assert.equal(toConsumers.length, rules.length);
  });

  it('saga-starter gets ordering\'s OrderPlaced only', () => {
    assert.deepEqual(
      rulesTo('saga-starter').map(([, r]) => r.Properties.EventPattern),
      [{ source: ['ordering'], 'detail-type': ['OrderPlaced'] }],
    );
  });

  it('each saga command reaches exactly one queue: its participant\'s', () => {
    const expected: Record<string, string> = {
      ReserveInventory: 'inventory-commands',
      ReleaseInventory: 'inventory-commands',
      AuthorizePayment: 'payment-commands',
      CancelPayment: 'payment-commands',
      CreateShipment: 'shipping-commands',
      CancelShipment: 'shipping-commands',
      CompleteOrder: 'ordering-commands',
      CancelOrder: 'ordering-commands',
    };
    assert.deepEqual(commandTypes(saga).sort(), Object.keys(expected).sort());
    for (const [command, handler] of Object.entries(expected)) {
      const queues = new Set(
        rules
          .filter(([, r]) => patternSelects(r.Properties.EventPattern, saga.source, command))
          .flatMap(([, r]) => targetsOf(r)),
      );
      assert.deepEqual([...queues], [queueIdOf(template, handler)], command);
    }
  });

  it('a published event reaches the queues of the contexts that subscribe to it', () => {
    // A few the app depends on: notification has no address without CustomerRegistered, payment
    // captures on OrderCompleted, catalog-get reads the view catalog-events keeps.
    const reaching = (source: string, type: string) =>
      rules
        .filter(([, r]) => patternSelects(r.Properties.EventPattern, source, type))
        .flatMap(([, r]) => targetsOf(r))
        .map((q: string) => queueConsumers.find((h) => queueIdOf(template, h) === q))
        .sort();
    assert.deepEqual(reaching('identity', 'CustomerRegistered'), ['notification-worker', 'ordering-commands']);
    assert.deepEqual(reaching('ordering', 'OrderCompleted'), ['notification-worker', 'ordering-commands', 'payment-commands']);
    assert.deepEqual(reaching('ordering', 'OrderPlaced'), ['ordering-commands', 'saga-starter']);
    assert.deepEqual(reaching('catalog', 'ProductListed'), ['catalog-events', 'ordering-commands']);
    assert.deepEqual(reaching('saga', 'OrderCompleted'), [], 'settled orders come from ordering only');
  });
});

describe('notification\'s queue is the app\'s work queue', () => {
  const queueId = queueIdOf(template, 'notification-worker');
  const dlqId = dlqIdOf(template, queueId);
  const sqsQueues = template.findResources('AWS::SQS::Queue');

  it('named <prefix>notifications, its dead-letter queue <prefix>notifications-dlq', () => {
    assert.equal(sqsQueues[queueId].Properties.QueueName, 'commerce-notifications');
    assert.equal(sqsQueues[dlqId].Properties.QueueName, 'commerce-notifications-dlq');
    assert.equal(sqsQueues[queueId].Properties.RedrivePolicy.maxReceiveCount, MAX_RECEIVES);
  });

  it('no other queue has a fixed name', () => {
    for (const [id, q] of queues) {
      if (id !== queueId && id !== dlqId) assert.equal(q.Properties.QueueName, undefined, id);
    }
  });

  it('the names, the rule names and EVENTFLOW_RESOURCE_PREFIX follow the resourcePrefix context', () => {
    const other = synth({ resourcePrefix: 'staging_' });
    const names = resourcesOf(other, 'AWS::SQS::Queue')
      .map(([, q]) => q.Properties.QueueName)
      .filter(Boolean)
      .sort();
    assert.deepEqual(names, ['staging_notifications', 'staging_notifications-dlq']);
    const env = fnOf(other, 'notification-worker').resource.Properties.Environment.Variables;
    assert.equal(env.EVENTFLOW_RESOURCE_PREFIX, 'staging_');
    for (const [, r] of resourcesOf(other, 'AWS::Events::Rule')) {
      assert.ok((r.Properties.Name as string).startsWith('staging_'), r.Properties.Name);
    }
  });
});

describe('event sources', () => {
  it('every queue consumer reads batches of 10 and reports failed items', () => {
    for (const handler of queueConsumers) {
      const fn = fnOf(template, handler);
      template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
        FunctionName: { Ref: fn.id },
        BatchSize: QUEUE_BATCH_SIZE,
        FunctionResponseTypes: ['ReportBatchItemFailures'],
      });
    }
  });

  it('the relay is invoked by new outbox entries of each publishing context, bounded, with a failure queue', () => {
    const relay = fnOf(template, 'outbox-relay');
    const mappings = resourcesOf(template, 'AWS::Lambda::EventSourceMapping').filter(
      ([, m]) => m.Properties.FunctionName.Ref === relay.id,
    );
    const tables = mappings.map(([, m]) => [...referencedIds(m.Properties.EventSourceArn)][0]).sort();
    assert.deepEqual(tables, OUTBOX_CONTEXTS.map((c) => tableId(template, `commerce-${c}-meta`)).sort());
    for (const [, m] of mappings) {
      const p = m.Properties;
      assert.equal(p.StartingPosition, 'TRIM_HORIZON');
      assert.equal(p.BisectBatchOnFunctionError, true);
      assert.equal(p.MaximumRetryAttempts, RELAY_RETRY_ATTEMPTS);
      // The relay answers for the whole batch (it publishes the table's outbox), not per record.
      assert.equal(p.FunctionResponseTypes, undefined);
      assert.ok(p.DestinationConfig.OnFailure.Destination);
      const pattern = JSON.parse(p.FilterCriteria.Filters[0].Pattern);
      assert.deepEqual(pattern, {
        eventName: ['INSERT'],
        dynamodb: { Keys: { pk: { S: [{ prefix: OUTBOX_PK_PREFIX }] } } },
      });
    }
  });
});

describe('outputs', () => {
  it('the API URL, the bus name and the state machine ARN', () => {
    const outputs = template.toJSON().Outputs as Json;
    assert.ok(outputs.ApiUrl);
    assert.ok(outputs.EventBusName);
    assert.ok(outputs.StateMachineArn);
  });
});

describe('the documents the Rust side checks in', () => {
  it('exist and parse', () => {
    assert.ok(readJson('api-gateway/openapi.json').paths);
    assert.ok(readJson('state-machine/place-order.asl.json').States);
  });
});

describe('alarms', () => {
  const alarms = resourcesOf(template, 'AWS::CloudWatch::Alarm');
  const [topicId] = resourcesOf(template, 'AWS::SNS::Topic')[0];

  it('every dead-letter queue raises an alarm when it holds a message', () => {
    assert.equal(dlqIds.size, queueConsumers.length + 2);
    for (const id of dlqIds) {
      const found = alarms.filter(
        ([, a]) =>
          a.Properties.MetricName === 'ApproximateNumberOfMessagesVisible' &&
          referencedIds(a.Properties.Dimensions).has(id),
      );
      assert.equal(found.length, 1, id);
      assert.equal(found[0][1].Properties.Threshold, 0);
      assert.equal(found[0][1].Properties.ComparisonOperator, 'GreaterThanThreshold');
    }
  });

  it('every function but the authorizer raises an alarm on an invocation error', () => {
    for (const handler of FUNCTIONS) {
      const { id } = fnOf(template, handler);
      const found = alarms.filter(
        ([, a]) => a.Properties.MetricName === 'Errors' && referencedIds(a.Properties.Dimensions).has(id),
      );
      // The authorizer refuses every bad token with an invocation error: no alarm on those.
      assert.equal(found.length, handler === 'authorizer' ? 0 : 1, handler);
    }
  });

  it('every alarm notifies the topic, and treats missing data as fine', () => {
    for (const [id, a] of alarms) {
      assert.deepEqual(a.Properties.AlarmActions, [{ Ref: topicId }], id);
      assert.equal(a.Properties.TreatMissingData, 'notBreaching', id);
    }
  });
});
