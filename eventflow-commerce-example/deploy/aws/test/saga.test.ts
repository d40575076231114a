/** The state machine: exactly the checked-in document, the bus substituted, logged, alarmed. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import { DEFAULT_ASL, DEPLOY_DIR } from '../lib/config';
import { BUS_PLACEHOLDER, BUS_SUBSTITUTION, substituteBus } from '../lib/saga-definition';
import { Json, defaultTemplate, referencedIds, resourcesOf } from './helpers';

const template = defaultTemplate();
const asl = readFileSync(path.join(DEPLOY_DIR, DEFAULT_ASL), 'utf8');
const [smId, sm] = resourcesOf(template, 'AWS::StepFunctions::StateMachine')[0];
const [busId] = resourcesOf(template, 'AWS::Events::EventBus')[0];

describe('the PlaceOrder state machine', () => {
  it('is Standard', () => {
    assert.equal(sm.Properties.StateMachineType, 'STANDARD');
  });

  it('has the checked-in document as its definition, placeholder and all', () => {
    const definition = sm.Properties.DefinitionString;
    assert.equal(typeof definition, 'string', 'a literal string, not an S3 asset or a join');
    assert.ok(definition.includes(BUS_PLACEHOLDER));
    assert.deepEqual(JSON.parse(definition), JSON.parse(asl));
  });

  it('substitutes the bus name, so that after substitution it equals the document with the bus in it', () => {
    const substitutions: Json = sm.Properties.DefinitionSubstitutions;
    assert.deepEqual(Object.keys(substitutions), [BUS_SUBSTITUTION]);
    assert.deepEqual(substitutions[BUS_SUBSTITUTION], { Ref: busId });
    // Resolve as CloudFormation would: Ref of an EventBus is its name.
    const busName = template.findResources('AWS::Events::EventBus')[busId].Properties.Name;
    const resolved = substituteBus(sm.Properties.DefinitionString, busName);
    assert.deepEqual(JSON.parse(resolved), JSON.parse(substituteBus(asl, busName)));
    assert.ok(!resolved.includes('${'), 'no other placeholder is left');
  });

  it('logs errors to its own log group, without execution data', () => {
    const logging = sm.Properties.LoggingConfiguration;
    assert.equal(logging.Level, 'ERROR');
    assert.equal(logging.IncludeExecutionData, false);
    const [groupId] = referencedIds(logging.Destinations);
    assert.equal(template.findResources('AWS::Logs::LogGroup')[groupId].Type, 'AWS::Logs::LogGroup');
  });

  it('raises an alarm on a failed and on a timed-out execution', () => {
    for (const metric of ['ExecutionsFailed', 'ExecutionsTimedOut']) {
      const alarms = resourcesOf(template, 'AWS::CloudWatch::Alarm').filter(
        ([, a]) =>
          a.Properties.MetricName === metric &&
          a.Properties.Namespace === 'AWS/States' &&
          referencedIds(a.Properties.Dimensions).has(smId),
      );
      assert.equal(alarms.length, 1, metric);
      assert.equal(alarms[0][1].Properties.Threshold, 0);
      assert.equal(alarms[0][1].Properties.ComparisonOperator, 'GreaterThanThreshold');
    }
  });
});
