/**
 * The Lambda functions: every one runs the same `bootstrap.zip` (the Rust binary
 * `eventflow-commerce-lambda`, runtime `provided.al2023`), told what to be by
 * `EVENTFLOW_HANDLER` and `EVENTFLOW_CONTEXT` (contract.ts, RUNS). A function starts with its log
 * group and, if it signs or verifies tokens, read access to the JWT secret; every other
 * permission is granted where the resources are wired (stack.ts).
 */
import { Duration, RemovalPolicy, Tags } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';

import { FunctionName, HTTP_FUNCTIONS, JWT_FUNCTIONS, RUNS } from './contract';

export interface FunctionsProps {
  readonly zip: string;
  readonly architecture: lambda.Architecture;
  readonly busName: string;
  readonly tablePrefix: string;
  readonly jwtSecret: secretsmanager.ISecret;
}

export interface HandlerSettings {
  /** Default 256 MB. */
  readonly memoryMiB?: number;
  readonly timeout: Duration;
  readonly environment?: Record<string, string>;
}

/**
 * How long each kind of function may run, and why:
 * - HTTP: API Gateway gives up after 29 s; the app answers 503 itself after
 *   `HTTP_REQUEST_TIMEOUT_SECONDS` (25 here), so the client gets the app's JSON error first.
 * - queue consumers: a batch of 10 small commands; 30 s leaves room for DynamoDB retries. Their
 *   queues hide a message 3x that (messaging.ts).
 * - the authorizer verifies a signature: 5 s.
 */
export const HTTP_TIMEOUT = Duration.seconds(28);
/** The tag naming each function (as in contract.ts, FUNCTIONS). */
export const FUNCTION_TAG = 'eventflow:function';
export const HTTP_REQUEST_TIMEOUT_SECONDS = '25';
export const CONSUMER_TIMEOUT = Duration.seconds(30);
export const AUTHORIZER_TIMEOUT = Duration.seconds(5);

export class Functions extends Construct {
  readonly byName = new Map<FunctionName, lambda.Function>();
  private readonly code: lambda.Code;

  constructor(
    scope: Construct,
    id: string,
    private readonly props: FunctionsProps,
  ) {
    super(scope, id);
    // One asset for all functions: uploaded once.
    this.code = lambda.Code.fromAsset(props.zip);
  }

  /** The function `name` (made once). */
  add(name: FunctionName, settings: HandlerSettings): lambda.Function {
    if (this.byName.has(name)) {
      throw new Error(`function ${name} made twice`);
    }
    const { handler, context } = RUNS[name];
    const environment: Record<string, string> = {
      EVENTFLOW_HANDLER: handler,
      ...(context ? { EVENTFLOW_CONTEXT: context } : {}),
      EVENT_BUS_ADAPTER: 'eventbridge',
      EVENT_BUS_NAME: this.props.busName,
      EVENTFLOW_TABLE_PREFIX: this.props.tablePrefix,
      // The stack owns every resource; the app must not create any.
      EVENTFLOW_PROVISION: 'false',
      LOG_FORMAT: 'json',
      RUST_LOG: 'info',
      ...settings.environment,
    };
    if ((HTTP_FUNCTIONS as readonly string[]).includes(name)) {
      // API Gateway REST events carry the stage in the path (`/prod/orders`); the router
      // expects `/orders`.
      environment.AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH = 'true';
      environment.HTTP_REQUEST_TIMEOUT_SECONDS = HTTP_REQUEST_TIMEOUT_SECONDS;
    }
    if (JWT_FUNCTIONS.includes(name)) {
      // The ARN, never the value: the function reads the secret at start.
      environment.JWT_SECRET_ARN = this.props.jwtSecret.secretArn;
    }
    const logGroup = new logs.LogGroup(this, `${name}-logs`, {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // A role of its own with write access to its own log group only (the managed
    // AWSLambdaBasicExecutionRole would allow every log group: Resource *).
    const role = new iam.Role(this, `${name}-role`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `eventflow commerce: ${name}`,
    });
    logGroup.grantWrite(role);
    const fn = new lambda.Function(this, name, {
      role,
      description: `eventflow commerce: ${name}`,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      handler: 'bootstrap',
      code: this.code,
      architecture: this.props.architecture,
      memorySize: settings.memoryMiB ?? 256,
      timeout: settings.timeout,
      environment,
      logGroup,
    });
    if (JWT_FUNCTIONS.includes(name)) {
      this.props.jwtSecret.grantRead(fn);
    }
    Tags.of(fn).add(FUNCTION_TAG, name);
    this.byName.set(name, fn);
    return fn;
  }
}
