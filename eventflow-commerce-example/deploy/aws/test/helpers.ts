/**
 * Test helpers: a stack synthesized against a placeholder zip, and lookups into its template by
 * what things are (a function by its EVENTFLOW_HANDLER, a table by its name), not by logical ids.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { App, RemovalPolicy } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';

import {
  DEFAULT_ASL,
  DEFAULT_OPENAPI,
  DEFAULT_SUBSCRIPTIONS,
  DEPLOY_DIR,
  DeployConfig,
  parseArchitecture,
  placeholderZip,
} from '../lib/config';
import { FUNCTION_TAG } from '../lib/functions';
import { CommerceStack } from '../lib/stack';

export type Json = Record<string, any>;

let zip: string | undefined;

/** A configuration as the app would read it, with a placeholder zip. */
export function testConfig(overrides: Partial<DeployConfig> = {}): DeployConfig {
  zip ??= placeholderZip();
  return {
    lambdaZip: zip,
    architecture: parseArchitecture(undefined),
    tablePrefix: 'commerce-',
    resourcePrefix: 'commerce-',
    tableRemovalPolicy: RemovalPolicy.RETAIN,
    aslPath: path.join(DEPLOY_DIR, DEFAULT_ASL),
    openApiPath: path.join(DEPLOY_DIR, DEFAULT_OPENAPI),
    subscriptionsPath: path.join(DEPLOY_DIR, DEFAULT_SUBSCRIPTIONS),
    ...overrides,
  };
}

export function synth(overrides: Partial<DeployConfig> = {}): Template {
  const app = new App();
  const stack = new CommerceStack(app, 'Test', { config: testConfig(overrides) });
  return Template.fromStack(stack);
}

/**
 * The default stack's template. Synthesizing takes seconds and every test file needs it, so it is
 * kept on disk under dist/ keyed by everything it depends on (the compiled lib/, the three
 * documents); `npm test` rebuilds dist/ anyway.
 */
export function defaultTemplate(): Template {
  const lib = path.join(DEPLOY_DIR, 'dist', 'lib');
  const hash = createHash('sha256');
  for (const file of readdirSync(lib).filter((f) => f.endsWith('.js')).sort()) {
    hash.update(file).update(readFileSync(path.join(lib, file)));
  }
  for (const document of [DEFAULT_ASL, DEFAULT_OPENAPI, DEFAULT_SUBSCRIPTIONS]) {
    hash.update(readFileSync(path.join(DEPLOY_DIR, document)));
  }
  const cacheDir = path.join(DEPLOY_DIR, 'dist', '.template-cache');
  const file = path.join(cacheDir, `${hash.digest('hex')}.json`);
  if (existsSync(file)) {
    return Template.fromJSON(JSON.parse(readFileSync(file, 'utf8')));
  }
  const template = synth();
  mkdirSync(cacheDir, { recursive: true });
  const partial = `${file}.${process.pid}`;
  writeFileSync(partial, JSON.stringify(template.toJSON()));
  renameSync(partial, file);
  return template;
}

export function resourcesOf(template: Template, type: string): [string, Json][] {
  return Object.entries(template.findResources(type)) as [string, Json][];
}

export function readJson(relative: string): Json {
  return JSON.parse(readFileSync(path.join(DEPLOY_DIR, relative), 'utf8'));
}

/** The function named `name` (its tag, see lib/functions.ts): its logical id and resource. */
export function fnOf(template: Template, name: string): { id: string; resource: Json } {
  const found = resourcesOf(template, 'AWS::Lambda::Function').filter(([, r]) =>
    (r.Properties.Tags ?? []).some((t: Json) => t.Key === FUNCTION_TAG && t.Value === name),
  );
  if (found.length !== 1) throw new Error(`${found.length} functions named ${name}`);
  return { id: found[0][0], resource: found[0][1] };
}

/** The name of the function with logical id `id`. */
export function nameOf(fn: Json): string | undefined {
  return (fn.Properties.Tags ?? []).find((t: Json) => t.Key === FUNCTION_TAG)?.Value;
}

/** The logical id of the table named `name`. */
export function tableId(template: Template, name: string): string {
  const found = resourcesOf(template, 'AWS::DynamoDB::Table').filter(([, r]) => r.Properties.TableName === name);
  if (found.length !== 1) throw new Error(`${found.length} tables named ${name}`);
  return found[0][0];
}

/** Every logical id a value refers to (Ref, Fn::GetAtt, Fn::Sub variables). */
export function referencedIds(value: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(value)) {
    value.forEach((v) => referencedIds(v, out));
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === 'Ref' && typeof v === 'string') out.add(v);
      else if (k === 'Fn::GetAtt' && Array.isArray(v)) out.add(String(v[0]));
      else referencedIds(v, out);
    }
  }
  return out;
}

export interface Statement {
  Effect: string;
  Action: string[];
  Resource: unknown[];
}

function asArray<T>(v: T | T[] | undefined): T[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** Every statement of the policies attached to the role with logical id `roleId`. */
export function statementsOfRole(template: Template, roleId: string): Statement[] {
  const statements: Statement[] = [];
  for (const [, policy] of resourcesOf(template, 'AWS::IAM::Policy')) {
    const roles = asArray(policy.Properties.Roles).map((r: Json) => r.Ref);
    if (!roles.includes(roleId)) continue;
    for (const s of policy.Properties.PolicyDocument.Statement) {
      statements.push({ Effect: s.Effect, Action: asArray(s.Action), Resource: asArray(s.Resource) });
    }
  }
  const role = template.findResources('AWS::IAM::Role')[roleId];
  for (const inline of asArray(role?.Properties?.Policies) as Json[]) {
    for (const s of inline.PolicyDocument.Statement) {
      statements.push({ Effect: s.Effect, Action: asArray(s.Action), Resource: asArray(s.Resource) });
    }
  }
  return statements;
}

/** Every statement of the policies of `handler`'s execution role. */
export function statementsOf(template: Template, handler: string): Statement[] {
  const roleId = fnOf(template, handler).resource.Properties.Role['Fn::GetAtt'][0];
  return statementsOfRole(template, roleId);
}

/** The managed policies of `handler`'s role (only the basic execution role is expected). */
export function managedPoliciesOf(template: Template, handler: string): unknown[] {
  const roleId = fnOf(template, handler).resource.Properties.Role['Fn::GetAtt'][0];
  return asArray(template.findResources('AWS::IAM::Role')[roleId].Properties.ManagedPolicyArns);
}

/** Logical id -> resource type, for the whole template. */
export function typesById(template: Template): Map<string, string> {
  const json = template.toJSON() as Json;
  return new Map(Object.entries(json.Resources as Json).map(([id, r]) => [id, (r as Json).Type as string]));
}

/** The table name of every table a statement list touches. */
export function tablesTouched(template: Template, statements: Statement[]): Set<string> {
  const tables = new Map(
    resourcesOf(template, 'AWS::DynamoDB::Table').map(([id, r]) => [id, r.Properties.TableName as string]),
  );
  const out = new Set<string>();
  for (const s of statements) {
    for (const id of referencedIds(s.Resource)) {
      const name = tables.get(id);
      if (name) out.add(name);
    }
  }
  return out;
}

/** The logical id of the queue whose event source mapping invokes `handler`. */
export function queueIdOf(template: Template, handler: string): string {
  const fn = fnOf(template, handler);
  const mappings = resourcesOf(template, 'AWS::Lambda::EventSourceMapping').filter(
    ([, m]) => m.Properties.FunctionName.Ref === fn.id,
  );
  if (mappings.length !== 1) throw new Error(`${mappings.length} event sources invoke ${handler}`);
  const [queueId] = [...referencedIds(mappings[0][1].Properties.EventSourceArn)];
  return queueId;
}

/** The logical id of the dead-letter queue of the queue `queueId`. */
export function dlqIdOf(template: Template, queueId: string): string {
  const queue = template.findResources('AWS::SQS::Queue')[queueId];
  const [dlqId] = [...referencedIds(queue.Properties.RedrivePolicy.deadLetterTargetArn)];
  return dlqId;
}
