/** Least privilege: what each function's role may do, and on what. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CONTEXTS, Context, FUNCTIONS, JWT_FUNCTIONS, OUTBOX_CONTEXTS, QUEUE_CONSUMERS, relaysInline } from '../lib/contract';
import {
  Statement,
  defaultTemplate,
  dlqIdOf,
  fnOf,
  queueIdOf,
  managedPoliciesOf,
  referencedIds,
  resourcesOf,
  statementsOf,
  statementsOfRole,
  tablesTouched,
  typesById,
} from './helpers';

const template = defaultTemplate();
const types = typesById(template);
const tablesOf = (...contexts: Context[]) => contexts.flatMap((c) => [`commerce-${c}-events`, `commerce-${c}-meta`]);

/** The saga participants: the consumers the state machine's commands reach (subscriptions.json). */
const PARTICIPANTS: Record<string, Context> = {
  'inventory-commands': 'inventory',
  'payment-commands': 'payment',
  'shipping-commands': 'shipping',
  'ordering-commands': 'ordering',
};

const WRITES = /^dynamodb:(PutItem|UpdateItem|DeleteItem|BatchWriteItem|TransactWriteItems|CreateTable|DeleteTable)$/;

/** The statements of `handler` that name a DynamoDB table. */
function tableStatements(handler: string): Statement[] {
  return statementsOf(template, handler).filter((s) =>
    [...referencedIds(s.Resource)].some((id) => types.get(id) === 'AWS::DynamoDB::Table'),
  );
}

/** The tables `handler` may write. */
function writtenTables(handler: string): Set<string> {
  return tablesTouched(
    template,
    tableStatements(handler).filter((s) => s.Action.some((a) => WRITES.test(a))),
  );
}

describe('tables', () => {
  const expected: Record<string, { read: string[]; write: string[] }> = {
    'auth-login': { read: tablesOf('identity'), write: tablesOf('identity') },
    'catalog-get': { read: tablesOf('catalog'), write: [] },
    'orders-post': { read: tablesOf('ordering'), write: tablesOf('ordering') },
    'orders-get': { read: tablesOf('ordering'), write: [] },
    authorizer: { read: [], write: [] },
    'saga-starter': { read: [], write: [] },
    'catalog-events': { read: tablesOf('catalog'), write: tablesOf('catalog') },
    'notification-worker': { read: tablesOf('notification'), write: tablesOf('notification') },
    'outbox-relay': {
      read: tablesOf(...OUTBOX_CONTEXTS),
      // Deletes the published outbox entries; never writes an event.
      write: OUTBOX_CONTEXTS.map((c) => `commerce-${c}-meta`),
    },
    ...Object.fromEntries(
      Object.entries(PARTICIPANTS).map(([p, context]) => [p, { read: tablesOf(context), write: tablesOf(context) }]),
    ),
  };

  it('covers every function', () => {
    assert.deepEqual(Object.keys(expected).sort(), [...FUNCTIONS].sort());
  });

  for (const [handler, { read, write }] of Object.entries(expected)) {
    it(`${handler}: its own context's tables only`, () => {
      assert.deepEqual([...tablesTouched(template, tableStatements(handler))].sort(), [...read].sort());
      assert.deepEqual([...writtenTables(handler)].sort(), [...write].sort());
    });
  }

  it('orders-get has no write action at all, catalog-get no ordering table', () => {
    for (const s of statementsOf(template, 'orders-get')) {
      for (const a of s.Action) {
        assert.ok(!/^dynamodb:(Put|Update|Delete|BatchWrite|TransactWrite|Create)/.test(a), a);
        assert.ok(!/^(events|sqs|states|sns):/.test(a), a);
      }
    }
    const catalog = tablesTouched(template, statementsOf(template, 'catalog-get'));
    for (const table of tablesOf('ordering')) assert.ok(!catalog.has(table), table);
  });

  it('no function touches a table of a context other than its own (the relay: the publishing contexts)', () => {
    for (const context of CONTEXTS) {
      const owners = Object.entries(expected)
        .filter(([, e]) => e.read.some((t) => t.startsWith(`commerce-${context}-`)))
        .map(([h]) => h);
      for (const handler of FUNCTIONS.filter((h) => !owners.includes(h))) {
        const touched = tablesTouched(template, statementsOf(template, handler));
        for (const t of tablesOf(context)) assert.ok(!touched.has(t), `${handler} touches ${t}`);
      }
    }
  });
});

describe('bus, saga and secret', () => {
  const [busId] = resourcesOf(template, 'AWS::Events::EventBus')[0];
  const [smId] = resourcesOf(template, 'AWS::StepFunctions::StateMachine')[0];
  const [secretId] = resourcesOf(template, 'AWS::SecretsManager::Secret')[0];
  const withAction = (handler: string, prefix: string) =>
    statementsOf(template, handler).filter((s) => s.Action.some((a) => a.startsWith(prefix)));

  it('only the relay and the consumers of publishing contexts may put events, and only on the bus', () => {
    const publishers = FUNCTIONS.filter((f) => f === 'outbox-relay' || relaysInline(f));
    assert.deepEqual(publishers.sort(), ['catalog-events', 'ordering-commands', 'outbox-relay']);
    for (const handler of FUNCTIONS) {
      const puts = withAction(handler, 'events:');
      if (!publishers.includes(handler)) {
        assert.equal(puts.length, 0, handler);
        continue;
      }
      assert.equal(puts.length, 1, handler);
      assert.deepEqual(puts[0].Action, ['events:PutEvents']);
      assert.deepEqual([...referencedIds(puts[0].Resource)], [busId]);
    }
  });

  it('saga-starter may start executions of the state machine, and nothing else of it', () => {
    const starts = withAction('saga-starter', 'states:');
    assert.deepEqual(starts.flatMap((s) => s.Action), ['states:StartExecution']);
    assert.deepEqual([...referencedIds(starts[0].Resource)], [smId]);
  });

  it('the participants may answer task tokens of the state machine; nobody else may', () => {
    for (const handler of FUNCTIONS) {
      const answers = withAction(handler, 'states:Send');
      if (!(handler in PARTICIPANTS)) {
        assert.equal(answers.length, 0, handler);
        continue;
      }
      const actions = answers.flatMap((s) => s.Action).sort();
      assert.deepEqual(actions, ['states:SendTaskFailure', 'states:SendTaskHeartbeat', 'states:SendTaskSuccess']);
      for (const s of answers) assert.deepEqual([...referencedIds(s.Resource)], [smId], handler);
    }
  });

  it('only the functions that sign or verify tokens may read the secret', () => {
    for (const handler of FUNCTIONS) {
      const reads = withAction(handler, 'secretsmanager:');
      if (!JWT_FUNCTIONS.includes(handler)) {
        assert.equal(reads.length, 0, handler);
        continue;
      }
      assert.deepEqual(reads.flatMap((s) => s.Action).sort(), [
        'secretsmanager:DescribeSecret',
        'secretsmanager:GetSecretValue',
      ]);
      assert.deepEqual([...referencedIds(reads[0].Resource)], [secretId]);
    }
  });

  it('the state machine may put events on the bus, nothing else but its log delivery', () => {
    const roleId = template.findResources('AWS::StepFunctions::StateMachine')[smId].Properties.RoleArn['Fn::GetAtt'][0];
    const statements = statementsOfRole(template, roleId);
    const puts = statements.filter((s) => s.Action.includes('events:PutEvents'));
    assert.equal(puts.length, 1);
    assert.deepEqual([...referencedIds(puts[0].Resource)], [busId]);
    for (const s of statements.filter((x) => x !== puts[0])) {
      for (const a of s.Action) assert.match(a, /^logs:/);
    }
  });
});

describe('queues', () => {
  /** `handler`'s SQS actions, by the logical id of the queue they are on. */
  const sqsActions = (handler: string) => {
    const out = new Map<string, Set<string>>();
    for (const s of statementsOf(template, handler)) {
      const actions = s.Action.filter((a) => a.startsWith('sqs:'));
      if (actions.length === 0) continue;
      for (const id of referencedIds(s.Resource)) {
        out.set(id, new Set([...(out.get(id) ?? []), ...actions]));
      }
    }
    return out;
  };
  const consume = ['sqs:ChangeMessageVisibility', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl', 'sqs:ReceiveMessage'];

  it('a queue consumer may consume its own queue and nothing else of SQS (notification: see below)', () => {
    for (const handler of QUEUE_CONSUMERS.filter((h) => h !== 'notification-worker')) {
      const actions = sqsActions(handler);
      assert.deepEqual([...actions.keys()], [queueIdOf(template, handler)], handler);
      assert.deepEqual([...actions.values()].map((a) => [...a].sort()), [consume], handler);
    }
    const consumerQueues = QUEUE_CONSUMERS.flatMap((h) => {
      const queueId = queueIdOf(template, h);
      return [queueId, dlqIdOf(template, queueId)];
    });
    for (const handler of FUNCTIONS.filter((h) => !QUEUE_CONSUMERS.includes(h))) {
      const actions = sqsActions(handler);
      if (handler !== 'outbox-relay') {
        assert.equal(actions.size, 0, handler);
        continue;
      }
      // The relay records a batch it gave up on in its on-failure queue.
      for (const [id, a] of actions) {
        assert.ok(!consumerQueues.includes(id), id);
        assert.deepEqual([...a].sort(), ['sqs:GetQueueAttributes', 'sqs:GetQueueUrl', 'sqs:SendMessage'], id);
      }
    }
  });

  it('notification-worker may also open its work queue: GetQueueUrl and GetQueueAttributes, GetQueueUrl of the DLQ', () => {
    const queueId = queueIdOf(template, 'notification-worker');
    const dlqId = dlqIdOf(template, queueId);
    const actions = sqsActions('notification-worker');
    assert.deepEqual([...actions.keys()].sort(), [queueId, dlqId].sort());
    assert.deepEqual([...actions.get(queueId)!].sort(), consume);
    assert.deepEqual([...actions.get(dlqId)!], ['sqs:GetQueueUrl']);
  });
});

describe('wildcards', () => {
  it('no function statement has a * resource but ListStreams; no managed policy; logs to its own group only', () => {
    for (const handler of FUNCTIONS) {
      for (const s of statementsOf(template, handler)) {
        if (s.Resource.includes('*')) {
          // DynamoDB's ListStreams has no resource-level permissions: AWS requires * (the stream
          // event source mapping needs it).
          assert.deepEqual(s.Action, ['dynamodb:ListStreams'], `${handler}: ${s.Action.join(',')} on *`);
        }
        assert.equal(s.Effect, 'Allow');
      }
      assert.deepEqual(managedPoliciesOf(template, handler), [], handler);
      const fn = fnOf(template, handler).resource;
      const logs = statementsOf(template, handler).filter((s) => s.Action.some((a) => a.startsWith('logs:')));
      assert.deepEqual(logs.flatMap((s) => s.Action).sort(), ['logs:CreateLogStream', 'logs:PutLogEvents'], handler);
      assert.deepEqual(
        [...referencedIds(logs.flatMap((s) => s.Resource))],
        [...referencedIds(fn.Properties.LoggingConfig.LogGroup)],
        handler,
      );
    }
  });

  it('the state machine\'s * is log delivery only (AWS requires * for those actions)', () => {
    const [smId, sm] = resourcesOf(template, 'AWS::StepFunctions::StateMachine')[0];
    assert.ok(smId);
    const statements = statementsOfRole(template, sm.Properties.RoleArn['Fn::GetAtt'][0]);
    for (const s of statements.filter((x) => x.Resource.includes('*'))) {
      for (const a of s.Action) {
        assert.match(a, /^logs:(CreateLogDelivery|GetLogDelivery|UpdateLogDelivery|DeleteLogDelivery|ListLogDeliveries|PutResourcePolicy|DescribeResourcePolicies|DescribeLogGroups)$/);
      }
    }
  });

  it('every role trusts exactly the one service that runs it', () => {
    for (const [id, role] of resourcesOf(template, 'AWS::IAM::Role')) {
      const principals = role.Properties.AssumeRolePolicyDocument.Statement.map((s: any) => s.Principal.Service);
      assert.equal(principals.length, 1, id);
      assert.ok(['lambda.amazonaws.com', 'states.amazonaws.com'].includes(principals[0]), id);
    }
    assert.ok(fnOf(template, 'authorizer'));
  });
});
