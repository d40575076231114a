/** The functions: one zip, the runtime, the environment each handler gets, the architecture. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import * as lambda from 'aws-cdk-lib/aws-lambda';

import { BUS_NAME, FUNCTIONS, HTTP_FUNCTIONS, JWT_FUNCTIONS, RUNS, WORK_QUEUES } from '../lib/contract';
import { Json, defaultTemplate, fnOf, nameOf, referencedIds, resourcesOf, synth } from './helpers';

const template = defaultTemplate();
const functions = resourcesOf(template, 'AWS::Lambda::Function');

describe('functions', () => {
  it('one per handler, all from the same asset, provided.al2023, handler bootstrap, x86_64 by default', () => {
    assert.deepEqual(functions.map(([, f]) => nameOf(f)).sort(), [...FUNCTIONS].sort());
    const code = new Set(functions.map(([, f]) => JSON.stringify(f.Properties.Code)));
    assert.equal(code.size, 1, 'one zip for every function');
    for (const [id, f] of functions) {
      assert.equal(f.Properties.Runtime, 'provided.al2023', id);
      assert.equal(f.Properties.Handler, 'bootstrap', id);
      assert.deepEqual(f.Properties.Architectures, ['x86_64'], id);
      assert.ok(f.Properties.MemorySize >= 256, id);
      assert.ok(f.Properties.LoggingConfig?.LogGroup, `${id} logs to its own log group`);
    }
  });

  it('tells the binary what to run: EVENTFLOW_HANDLER, and EVENTFLOW_CONTEXT for http and consumer', () => {
    const accepted = ['http', 'authorizer', 'consumer', 'outbox-relay', 'saga-starter'];
    for (const name of FUNCTIONS) {
      const env: Json = fnOf(template, name).resource.Properties.Environment.Variables;
      assert.ok(accepted.includes(env.EVENTFLOW_HANDLER), name);
      assert.equal(env.EVENTFLOW_HANDLER, RUNS[name].handler, name);
      assert.equal(env.EVENTFLOW_CONTEXT, RUNS[name].context, name);
      if (['http', 'consumer'].includes(env.EVENTFLOW_HANDLER)) assert.ok(env.EVENTFLOW_CONTEXT, name);
    }
    assert.deepEqual(
      Object.fromEntries(FUNCTIONS.map((n) => [n, Object.values(RUNS[n]).join(':')])),
      {
        'auth-login': 'http:identity',
        'catalog-get': 'http:catalog',
        'orders-post': 'http:ordering',
        'orders-get': 'http:ordering',
        authorizer: 'authorizer',
        'saga-starter': 'saga-starter',
        'inventory-commands': 'consumer:inventory',
        'payment-commands': 'consumer:payment',
        'shipping-commands': 'consumer:shipping',
        'ordering-commands': 'consumer:ordering',
        'catalog-events': 'consumer:catalog',
        'notification-worker': 'consumer:notification',
        'outbox-relay': 'outbox-relay',
      },
    );
  });

  it('every function gets the common environment', () => {
    const [busId] = resourcesOf(template, 'AWS::Events::EventBus')[0];
    for (const handler of FUNCTIONS) {
      const env: Json = fnOf(template, handler).resource.Properties.Environment.Variables;
      assert.equal(env.EVENT_BUS_ADAPTER, 'eventbridge', handler);
      assert.ok(referencedIds(env.EVENT_BUS_NAME).has(busId), handler);
      assert.equal(env.EVENTFLOW_TABLE_PREFIX, 'commerce-', handler);
      assert.equal(env.EVENTFLOW_PROVISION, 'false', handler);
      assert.equal(env.LOG_FORMAT, 'json', handler);
      assert.equal(env.RUST_LOG, 'info', handler);
    }
    template.hasResourceProperties('AWS::Events::EventBus', { Name: BUS_NAME });
  });

  it('every HTTP function ignores the stage in the path; no other function is told so', () => {
    for (const handler of FUNCTIONS) {
      const env: Json = fnOf(template, handler).resource.Properties.Environment.Variables;
      const http = (HTTP_FUNCTIONS as readonly string[]).includes(handler);
      assert.equal(env.AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH, http ? 'true' : undefined, handler);
    }
  });

  it('only the functions that sign or verify tokens know where the JWT secret is', () => {
    const [secretId] = resourcesOf(template, 'AWS::SecretsManager::Secret')[0];
    for (const handler of FUNCTIONS) {
      const env: Json = fnOf(template, handler).resource.Properties.Environment.Variables;
      if (JWT_FUNCTIONS.includes(handler)) {
        assert.deepEqual(env.JWT_SECRET_ARN, { Ref: secretId }, handler);
      } else {
        assert.equal(env.JWT_SECRET_ARN, undefined, handler);
      }
      assert.equal(env.JWT_SECRET, undefined, `${handler}: the secret value itself`);
    }
  });

  it('only notification-worker, which opens its work queue by name, gets EVENTFLOW_RESOURCE_PREFIX', () => {
    assert.deepEqual(WORK_QUEUES, { 'notification-worker': 'notifications' });
    for (const handler of FUNCTIONS) {
      const env: Json = fnOf(template, handler).resource.Properties.Environment.Variables;
      assert.equal(env.EVENTFLOW_RESOURCE_PREFIX, handler === 'notification-worker' ? 'commerce-' : undefined, handler);
    }
  });

  it('saga-starter knows the state machine', () => {
    const [smId] = resourcesOf(template, 'AWS::StepFunctions::StateMachine')[0];
    const env: Json = fnOf(template, 'saga-starter').resource.Properties.Environment.Variables;
    assert.deepEqual(env.STATE_MACHINE_ARN, { Ref: smId });
  });

  it('HTTP functions answer before API Gateway gives up (29 s)', () => {
    for (const handler of HTTP_FUNCTIONS) {
      const props = fnOf(template, handler).resource.Properties;
      assert.ok(props.Timeout < 29, handler);
      assert.ok(Number(props.Environment.Variables.HTTP_REQUEST_TIMEOUT_SECONDS) < props.Timeout, handler);
    }
  });
});

describe('architecture context', () => {
  it('arm64 builds every function for arm64', () => {
    const arm = synth({ architecture: lambda.Architecture.ARM_64 });
    for (const [id, f] of resourcesOf(arm, 'AWS::Lambda::Function')) {
      assert.deepEqual(f.Properties.Architectures, ['arm64'], id);
    }
  });
});
