/** Context settings: parsed, checked, and honoured by bin/app.ts. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';

import { RemovalPolicy } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';

import {
  DEFAULT_LAMBDA_ZIP,
  DEPLOY_DIR,
  parseArchitecture,
  parseRemovalPolicy,
  parseResourcePrefix,
  parseTablePrefix,
  placeholderZip,
  readConfig,
} from '../lib/config';
import { resourcesOf, synth } from './helpers';

const zip = placeholderZip();
const context = (values: Record<string, unknown>) => (key: string) => values[key];

describe('parsing', () => {
  it('architecture: x86_64 by default, arm64 allowed, anything else refused', () => {
    assert.equal(parseArchitecture(undefined), lambda.Architecture.X86_64);
    assert.equal(parseArchitecture('x86_64'), lambda.Architecture.X86_64);
    assert.equal(parseArchitecture('arm64'), lambda.Architecture.ARM_64);
    for (const bad of ['aarch64', 'amd64', 'ARM64', '', 64]) {
      assert.throws(() => parseArchitecture(bad), /architecture=.*x86_64.*arm64/);
    }
  });

  it('table removal: retain by default, destroy on request', () => {
    assert.equal(parseRemovalPolicy(undefined), RemovalPolicy.RETAIN);
    assert.equal(parseRemovalPolicy('destroy'), RemovalPolicy.DESTROY);
    assert.throws(() => parseRemovalPolicy('snapshot'), /retain.*destroy/);
  });

  it('table prefix: commerce- by default, characters DynamoDB accepts', () => {
    assert.equal(parseTablePrefix(undefined), 'commerce-');
    assert.equal(parseTablePrefix('staging.commerce_'), 'staging.commerce_');
    assert.throws(() => parseTablePrefix('a b'), /tablePrefix/);
  });

  it('resource prefix: commerce- by default, what SQS accepts in <prefix>notifications-dlq', () => {
    assert.equal(parseResourcePrefix(undefined), 'commerce-');
    assert.equal(parseResourcePrefix('staging_commerce-'), 'staging_commerce-');
    assert.equal(parseResourcePrefix(''), '');
    assert.equal(parseResourcePrefix('x'.repeat(63)), 'x'.repeat(63));
    for (const bad of ['a.b', 'a b', 'x'.repeat(64), 7]) {
      assert.throws(() => parseResourcePrefix(bad), /resourcePrefix=.*SQS queue names/);
    }
  });
});

describe('readConfig', () => {
  it('reads resourcePrefix', () => {
    assert.equal(readConfig(context({ lambdaZip: zip }), {}).resourcePrefix, 'commerce-');
    assert.equal(readConfig(context({ lambdaZip: zip, resourcePrefix: 'qa-' }), {}).resourcePrefix, 'qa-');
    assert.throws(() => readConfig(context({ lambdaZip: zip, resourcePrefix: 'q.a' }), {}), /resourcePrefix="q.a"/);
  });

  it('takes the zip from context, then EVENTFLOW_LAMBDA_ZIP, then the cargo-lambda path', () => {
    assert.equal(readConfig(context({ lambdaZip: zip }), { EVENTFLOW_LAMBDA_ZIP: '/nope' }).lambdaZip, zip);
    assert.equal(readConfig(context({}), { EVENTFLOW_LAMBDA_ZIP: zip }).lambdaZip, zip);
    assert.throws(
      () => readConfig(context({}), { EVENTFLOW_LAMBDA_ZIP: '/nonexistent/bootstrap.zip' }),
      (e: Error) => e.message.includes('/nonexistent/bootstrap.zip') && e.message.includes('cargo lambda build'),
    );
  });

  it('the default zip is target/lambda/eventflow-commerce-lambda/bootstrap.zip of the workspace', () => {
    assert.equal(
      path.resolve(DEPLOY_DIR, DEFAULT_LAMBDA_ZIP),
      path.resolve(DEPLOY_DIR, '../../..', 'target/lambda/eventflow-commerce-lambda/bootstrap.zip'),
    );
    assert.ok(readdirSync(path.resolve(DEPLOY_DIR, '../../..')).includes('Cargo.toml'), 'three levels up is the workspace');
  });

  it('a missing zip is allowed only for a teardown (EVENTFLOW_ALLOW_MISSING_ZIP=1)', () => {
    const config = readConfig(context({ lambdaZip: '/nonexistent/bootstrap.zip' }), { EVENTFLOW_ALLOW_MISSING_ZIP: '1' });
    assert.equal(readFileSync(config.lambdaZip).length, 22);
  });

  it('refuses a bad architecture', () => {
    assert.throws(() => readConfig(context({ lambdaZip: zip, architecture: 'sparc' }), {}), /architecture="sparc"/);
  });
});

/** Runs bin/app.ts as the CDK CLI does (context in CDK_CONTEXT_JSON), into a fresh directory. */
function runApp(ctx: Record<string, unknown>) {
  const outdir = mkdtempSync(path.join(os.tmpdir(), 'eventflow-cdk-out-'));
  const result = spawnSync(process.execPath, [path.join(DEPLOY_DIR, 'dist/bin/app.js')], {
    env: { PATH: process.env.PATH, CDK_OUTDIR: outdir, CDK_CONTEXT_JSON: JSON.stringify(ctx) },
    encoding: 'utf8',
  });
  return { ...result, outdir };
}

describe('bin/app.ts', () => {
  it('synthesizes without credentials, for arm64 when asked', () => {
    const run = runApp({ lambdaZip: zip, architecture: 'arm64' });
    assert.equal(run.status, 0, run.stderr);
    const template = JSON.parse(readFileSync(path.join(run.outdir, 'EventflowCommerce.template.json'), 'utf8'));
    const fns = Object.values(template.Resources as Record<string, any>).filter((r) => r.Type === 'AWS::Lambda::Function');
    assert.ok(fns.length > 0);
    for (const f of fns) assert.deepEqual(f.Properties.Architectures, ['arm64']);
  });

  it('fails with a message on a bad architecture', () => {
    const run = runApp({ lambdaZip: zip, architecture: 'sparc' });
    assert.notEqual(run.status, 0);
    assert.match(run.stderr, /architecture="sparc": use x86_64 \(the default\) or arm64/);
  });
});

describe('table removal policy', () => {
  it('destroy deletes the tables with the stack', () => {
    const t = synth({ tableRemovalPolicy: RemovalPolicy.DESTROY });
    for (const [id, table] of resourcesOf(t, 'AWS::DynamoDB::Table')) {
      assert.equal(table.DeletionPolicy, 'Delete', id);
    }
  });
});
