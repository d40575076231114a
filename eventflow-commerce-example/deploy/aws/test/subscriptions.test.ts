/** Reading the checked-in subscriptions, the saga participants they give, and rule names. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import { DEFAULT_ASL, DEFAULT_SUBSCRIPTIONS, DEPLOY_DIR } from '../lib/config';
import { RUNS, consumerOf } from '../lib/contract';
import { MAX_RULE_NAME, RULE_NAME, fnv1a, resourceName, ruleName } from '../lib/names';
import { parseSagaDocument } from '../lib/saga-definition';
import { parseSubscriptions, participantsOf, patternSelects } from '../lib/subscriptions';

const text = readFileSync(path.join(DEPLOY_DIR, DEFAULT_SUBSCRIPTIONS), 'utf8');
const asl = readFileSync(path.join(DEPLOY_DIR, DEFAULT_ASL), 'utf8');

/** The document with one change. */
function edited(change: (d: any) => void): string {
  const d = JSON.parse(text);
  change(d);
  return JSON.stringify(d);
}

describe('the checked-in subscriptions', () => {
  const subscriptions = parseSubscriptions(text);

  it('cover every context with a consumer function, each subscription going to that function', () => {
    const consuming = Object.values(RUNS)
      .filter((r) => r.handler === 'consumer')
      .map((r) => r.context!)
      .sort();
    assert.deepEqual([...new Set(subscriptions.map((s) => s.context))].sort(), consuming);
    for (const s of subscriptions) {
      assert.equal(s.consumer, consumerOf(s.context));
      assert.equal(RUNS[s.consumer].context, s.context);
    }
  });

  it('keep each pattern as the file has it', () => {
    const raw = JSON.parse(text);
    for (const s of subscriptions) {
      const entry = raw[s.context].find((e: any) => e.subscription === s.subscription);
      assert.deepStrictEqual(s.pattern, entry.pattern);
    }
  });

  it('give the four saga participants their commands', () => {
    const participants = participantsOf(parseSagaDocument(asl), subscriptions);
    const sorted = Object.fromEntries(
      [...participants].map(([fn, commands]) => [fn, [...commands].sort()] as const).sort(([a], [b]) => a.localeCompare(b)),
    );
    assert.deepEqual(sorted, {
      'inventory-commands': ['ReleaseInventory', 'ReserveInventory'],
      'ordering-commands': ['CancelOrder', 'CompleteOrder'],
      'payment-commands': ['AuthorizePayment', 'CancelPayment'],
      'shipping-commands': ['CancelShipment', 'CreateShipment'],
    });
  });

  it('have rule names within EventBridge\'s limits, each once', () => {
    const names = subscriptions.map((s) => ruleName('commerce-', s.subscription));
    for (const name of names) assert.match(name, RULE_NAME);
    assert.equal(new Set(names).size, names.length);
  });
});

describe('parseSubscriptions refuses what the stack cannot deploy', () => {
  it('not JSON, or not an object', () => {
    assert.throws(() => parseSubscriptions('{'), /not JSON/);
    assert.throws(() => parseSubscriptions('[]'), /must be an object/);
  });

  it('a context that is not one, or has no consumer function', () => {
    assert.throws(() => parseSubscriptions(edited((d) => (d.billing = d.catalog))), /"billing" is not a context/);
    assert.throws(() => parseSubscriptions(edited((d) => (d.identity = d.catalog))), /subscribes identity, but context "identity" has 0 consumer functions/);
  });

  it('a consuming context missing or with no subscription', () => {
    assert.throws(() => parseSubscriptions(edited((d) => delete d.shipping)), /no subscription of shipping/);
    assert.throws(() => parseSubscriptions(edited((d) => (d.shipping = []))), /shipping must list at least one/);
  });

  it('a subscription without a name, named twice, or without a pattern', () => {
    assert.throws(() => parseSubscriptions(edited((d) => delete d.catalog[0].subscription)), /needs a "subscription"/);
    assert.throws(
      () => parseSubscriptions(edited((d) => d.payment.push(d.payment[0]))),
      /payment has subscription saga-participant-payment twice/,
    );
    assert.throws(() => parseSubscriptions(edited((d) => (d.catalog[0].pattern = {}))), /non-empty "pattern"/);
    assert.throws(
      () => parseSubscriptions(edited((d) => (d.catalog[0].pattern = { source: 'catalog' }))),
      /field source must be an array/,
    );
  });

  it('a saga command no context, or two contexts, subscribe to', () => {
    const doc = parseSagaDocument(asl);
    const none = parseSubscriptions(edited((d) => (d.shipping[0].pattern['detail-type'] = ['CancelShipment'])));
    assert.throws(() => participantsOf(doc, none), /CreateShipment \(source saga\) reaches 0 consumers/);
    const two = parseSubscriptions(
      edited((d) => d.notification.push({ subscription: 'audit', pattern: { 'detail-type': ['CreateShipment'] } })),
    );
    assert.throws(() => participantsOf(doc, two), /CreateShipment \(source saga\) reaches 2 consumers/);
  });
});

describe('patternSelects', () => {
  it('judges source and detail-type; an absent field selects anything', () => {
    assert.ok(patternSelects({ 'detail-type': ['A'] }, 'saga', 'A'));
    assert.ok(patternSelects({ 'detail-type': ['A'], source: ['x'] }, 'x', 'A'));
    assert.ok(!patternSelects({ 'detail-type': ['A'], source: ['x'] }, 'saga', 'A'));
    assert.ok(!patternSelects({ 'detail-type': ['B'] }, 'saga', 'A'));
    assert.ok(patternSelects({ detail: { messageType: [{ exists: true }] } }, 'saga', 'A'));
  });
});

describe('resource names, as eventflow-bus/src/aws.rs makes them', () => {
  it('64-bit FNV-1a', () => {
    assert.equal(fnv1a(new Uint8Array()), 'cbf29ce484222325');
    assert.equal(fnv1a(new TextEncoder().encode('a')), 'af63dc4c8601ec8c');
  });

  it('a short name as it is, other characters replaced', () => {
    assert.equal(ruleName('commerce-', 'catalog-view'), 'commerce-catalog-view');
    assert.equal(ruleName('a.b-', 'x y/z'), 'a.b-x-y-z');
    assert.equal(resourceName(['a.b-', 'c'], 80, false), 'a-b-c');
  });

  it('a long name cut to the limit with a hash of the whole', () => {
    const long = 'x'.repeat(100);
    const a = ruleName('commerce-', long);
    const b = ruleName('commerce-', `${long}y`);
    assert.equal(a.length, MAX_RULE_NAME);
    assert.match(a, RULE_NAME);
    assert.match(a, /-[0-9a-f]{16}$/);
    assert.notEqual(a, b);
  });
});
