/**
 * The deployment's settings, read from CDK context (`-c name=value` or cdk.json) and checked
 * before anything is built, so a wrong value fails the synth with a message naming it.
 */
import { existsSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { RemovalPolicy } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';

import { DEFAULT_RESOURCE_PREFIX, DEFAULT_TABLE_PREFIX, WORK_QUEUES } from './contract';
import { MAX_QUEUE_NAME } from './names';

/** This directory (deploy/aws), whether running from `lib/` or from `dist/lib/`. */
export const DEPLOY_DIR = path.resolve(__dirname, path.basename(path.dirname(__dirname)) === 'dist' ? '../..' : '..');

/** Where the Lambda zip is looked for when neither the context nor the environment names one. */
export const DEFAULT_LAMBDA_ZIP = '../../../target/lambda/eventflow-commerce-lambda/bootstrap.zip';

/** The state machine document the saga crate exports. */
export const DEFAULT_ASL = 'state-machine/place-order.asl.json';

/** The app's OpenAPI document for the edge operations. */
export const DEFAULT_OPENAPI = 'api-gateway/openapi.json';

/** Each consuming context's subscriptions as EventBridge patterns, exported by the app. */
export const DEFAULT_SUBSCRIPTIONS = 'subscriptions.json';

export interface DeployConfig {
  /** Absolute path of the `bootstrap.zip` every function runs. */
  readonly lambdaZip: string;
  readonly architecture: lambda.Architecture;
  /** `EVENTFLOW_TABLE_PREFIX`. */
  readonly tablePrefix: string;
  /** `EVENTFLOW_RESOURCE_PREFIX`: of the work queues the app opens by name, and of the rules. */
  readonly resourcePrefix: string;
  /** What `cdk destroy` does with the tables. */
  readonly tableRemovalPolicy: RemovalPolicy;
  /** Absolute paths of the documents the Rust side checks in. */
  readonly aslPath: string;
  readonly openApiPath: string;
  readonly subscriptionsPath: string;
  /** An address the alarm topic mails, if any. */
  readonly alarmEmail?: string;
}

/** The architectures Lambda offers; anything else is refused. */
export function parseArchitecture(value: unknown): lambda.Architecture {
  switch (value ?? 'x86_64') {
    case 'x86_64':
      return lambda.Architecture.X86_64;
    case 'arm64':
      return lambda.Architecture.ARM_64;
    default:
      throw new Error(`context architecture=${JSON.stringify(value)}: use x86_64 (the default) or arm64`);
  }
}

/**
 * `retain` (the default) keeps the tables when the stack is destroyed: they hold the event
 * store, the source of truth. `destroy` deletes them with the stack (a throwaway deployment).
 */
export function parseRemovalPolicy(value: unknown): RemovalPolicy {
  switch (value ?? 'retain') {
    case 'retain':
      return RemovalPolicy.RETAIN;
    case 'destroy':
      return RemovalPolicy.DESTROY;
    default:
      throw new Error(`context tableRemovalPolicy=${JSON.stringify(value)}: use retain (the default) or destroy`);
  }
}

/** A table prefix DynamoDB accepts in a name (`[a-zA-Z0-9_.-]`). */
export function parseTablePrefix(value: unknown): string {
  const prefix = value ?? DEFAULT_TABLE_PREFIX;
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9_.-]{0,200}$/.test(prefix)) {
    throw new Error(`context tablePrefix=${JSON.stringify(value)}: letters, digits, '_', '.' and '-' only`);
  }
  return prefix;
}

/**
 * A resource prefix (`EVENTFLOW_RESOURCE_PREFIX`) every name made with it accepts: the app opens
 * the queue `<prefix><name>` by that exact name, so `<prefix><name>-dlq` must be an SQS name
 * (`[a-zA-Z0-9_-]`, at most 80 characters). Rule names are cut short with a hash (lib/names.ts).
 */
export function parseResourcePrefix(value: unknown): string {
  const prefix = value ?? DEFAULT_RESOURCE_PREFIX;
  const longest = Math.max(0, ...Object.values(WORK_QUEUES).map((name) => `${name}-dlq`.length));
  const max = MAX_QUEUE_NAME - longest;
  if (typeof prefix !== 'string' || !new RegExp(`^[A-Za-z0-9_-]{0,${max}}$`).test(prefix)) {
    throw new Error(
      `context resourcePrefix=${JSON.stringify(value)}: letters, digits, '_' and '-' only, at most ${max} characters (SQS queue names)`,
    );
  }
  return prefix;
}

/** An empty zip archive (just the end-of-central-directory record) in a temporary directory. */
export function placeholderZip(): string {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'eventflow-aws-')), 'bootstrap.zip');
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  writeFileSync(file, end);
  return file;
}

/** An existing regular file, or an error saying how to make it. */
export function requireFile(file: string, what: string, hint: string): string {
  if (!existsSync(file) || !statSync(file).isFile()) {
    throw new Error(`${what} not found at ${file}: ${hint}`);
  }
  return file;
}

/**
 * The configuration from `context` (a lookup such as `node.tryGetContext`) and `env` (for
 * `EVENTFLOW_LAMBDA_ZIP`). Relative paths are relative to deploy/aws.
 */
export function readConfig(
  context: (key: string) => unknown,
  env: NodeJS.ProcessEnv = process.env,
): DeployConfig {
  const fromDeployDir = (p: string) => path.resolve(DEPLOY_DIR, p);
  const zipSetting = context('lambdaZip') ?? env.EVENTFLOW_LAMBDA_ZIP ?? DEFAULT_LAMBDA_ZIP;
  if (typeof zipSetting !== 'string' || zipSetting === '') {
    throw new Error('context lambdaZip must be a path to bootstrap.zip');
  }
  const wanted = fromDeployDir(zipSetting);
  // `cdk destroy` synthesizes the app too, but needs no code: tearing down must not wait for a
  // Rust build (`npm run destroy:aws` sets EVENTFLOW_ALLOW_MISSING_ZIP=1).
  const allowMissing = env.EVENTFLOW_ALLOW_MISSING_ZIP === '1' && !existsSync(wanted);
  const lambdaZip = requireFile(
    allowMissing ? placeholderZip() : wanted,
    'the Lambda zip',
    'build it with `cargo lambda build --release --x86-64 --output-format zip -p eventflow-commerce-example ' +
      '--features lambda --bin eventflow-commerce-lambda` (repository root), or pass ' +
      '`-c lambdaZip=PATH` / EVENTFLOW_LAMBDA_ZIP=PATH',
  );
  const email = context('alarmEmail');
  return {
    lambdaZip,
    architecture: parseArchitecture(context('architecture')),
    tablePrefix: parseTablePrefix(context('tablePrefix')),
    resourcePrefix: parseResourcePrefix(context('resourcePrefix')),
    tableRemovalPolicy: parseRemovalPolicy(context('tableRemovalPolicy')),
    aslPath: requireFile(fromDeployDir(DEFAULT_ASL), 'the state machine document', 'the saga crate exports it'),
    openApiPath: requireFile(fromDeployDir(DEFAULT_OPENAPI), 'the OpenAPI document', 'the commerce crate exports it'),
    subscriptionsPath: requireFile(
      fromDeployDir(DEFAULT_SUBSCRIPTIONS),
      'the subscriptions document',
      'the commerce crate exports it',
    ),
    alarmEmail: typeof email === 'string' && email !== '' ? email : undefined,
  };
}
