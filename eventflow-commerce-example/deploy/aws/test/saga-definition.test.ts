/** Reading the checked-in PlaceOrder state machine document. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import { DEFAULT_ASL, DEPLOY_DIR } from '../lib/config';
import { BUS_PLACEHOLDER, PUT_EVENTS_WAIT, commandTypes, parseSagaDocument, substituteBus } from '../lib/saga-definition';

const text = readFileSync(path.join(DEPLOY_DIR, DEFAULT_ASL), 'utf8');

describe('the PlaceOrder document', () => {
  const doc = parseSagaDocument(text);

  it('sends the eight PlaceOrder commands (src/contract.rs) from one source', () => {
    assert.deepEqual(commandTypes(doc).sort(), [
      'AuthorizePayment',
      'CancelOrder',
      'CancelPayment',
      'CancelShipment',
      'CompleteOrder',
      'CreateShipment',
      'ReleaseInventory',
      'ReserveInventory',
    ]);
    assert.ok(doc.source.length > 0 && !doc.source.startsWith('aws.'), 'aws.* sources are reserved');
  });

  it('uses the callback pattern for every step and the bus placeholder in every entry', () => {
    for (const command of doc.commands) {
      const state = (doc.definition.States as any)[command.state];
      assert.equal(state.Resource, PUT_EVENTS_WAIT, command.state);
      assert.equal(command.eventBusName, BUS_PLACEHOLDER);
      assert.equal(state.Parameters.Entries[0].Detail['taskToken.$'], '$$.Task.Token', command.state);
    }
  });

  it('substitutes the bus name everywhere and nowhere else', () => {
    const out = substituteBus(text, 'my-bus');
    assert.ok(!out.includes(BUS_PLACEHOLDER));
    const reparsed = JSON.parse(out);
    const entries = Object.values(reparsed.States as Record<string, any>)
      .filter((s) => s.Type === 'Task')
      .flatMap((s) => s.Parameters.Entries);
    assert.ok(entries.length >= 8);
    for (const e of entries) assert.equal(e.EventBusName, 'my-bus');
  });
});

/** The document with one change. */
function edited(change: (d: any) => void): string {
  const d = JSON.parse(text);
  change(d);
  return JSON.stringify(d);
}

describe('parseSagaDocument refuses what the stack cannot deploy', () => {
  it('a bus name other than the placeholder', () => {
    const t = edited((d) => (d.States.Step_ReserveInventory.Parameters.Entries[0].EventBusName = 'default'));
    assert.throws(() => parseSagaDocument(t), /expected the placeholder/);
  });

  it('commands from two sources', () => {
    const t = edited((d) => (d.States.Step_ReserveInventory.Parameters.Entries[0].Source = 'other'));
    assert.throws(() => parseSagaDocument(t), /share one Source/);
  });

  it('a Lambda task', () => {
    const t = edited((d) => (d.States.Step_ReserveInventory.Resource = 'arn:aws:states:::lambda:invoke'));
    assert.throws(() => parseSagaDocument(t), /not an EventBridge putEvents task/);
  });

  it('not JSON, or no States', () => {
    assert.throws(() => parseSagaDocument('{'), /not JSON/);
    assert.throws(() => parseSagaDocument('{"StartAt":"A"}'), /StartAt and States/);
  });
});
