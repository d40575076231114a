/**
 * The edge: an API Gateway REST API imported from the app's OpenAPI document (converted by
 * openapi.ts), Lambda proxy integrations to the HTTP functions, the JWT checked by a Lambda
 * TOKEN authorizer on the operations that require the bearer scheme.
 */
import { readFileSync } from 'node:fs';

import { Fn, Stack } from 'aws-cdk-lib';
import * as apigateway from 'aws-cdk-lib/aws-apigateway';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';

import { HttpFunction, functionOf } from './contract';
import { operationsOf, toApiGatewayDefinition } from './openapi';

/** Stage throttling: a burst of 100 requests, 50 a second sustained (API Gateway answers 429 beyond). */
export const THROTTLE_BURST = 100;
export const THROTTLE_RATE = 50;
export const STAGE = 'prod';
/** The authorizer's answers are not cached: a token is checked on every request. */
export const AUTHORIZER_TTL_SECONDS = 0;

/** The URI API Gateway calls to invoke `fn`, as a CloudFormation `Fn::Sub`. */
export function invocationUri(fn: lambda.IFunction): string {
  return Fn.sub(
    'arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${FunctionArn}/invocations',
    { FunctionArn: fn.functionArn },
  );
}

export interface ApiProps {
  readonly openApiPath: string;
  readonly functions: Record<HttpFunction, lambda.IFunction>;
  readonly authorizer: lambda.IFunction;
}

export class Api extends Construct {
  readonly api: apigateway.SpecRestApi;

  constructor(scope: Construct, id: string, props: ApiProps) {
    super(scope, id);
    const document: unknown = JSON.parse(readFileSync(props.openApiPath, 'utf8'));
    const definition = toApiGatewayDefinition(document, {
      integrationUri: (method, path) => invocationUri(props.functions[functionOf(method, path)]),
      authorizerUri: invocationUri(props.authorizer),
      authorizerTtlSeconds: AUTHORIZER_TTL_SECONDS,
    });
    this.api = new apigateway.SpecRestApi(this, 'Api', {
      restApiName: 'eventflow-commerce',
      description: 'eventflow commerce example: the edge operations',
      apiDefinition: apigateway.ApiDefinition.fromInline(definition),
      endpointTypes: [apigateway.EndpointType.REGIONAL],
      // The account-wide CloudWatch role of API Gateway is not this stack's to own.
      cloudWatchRole: false,
      // Warnings (e.g. a keyword API Gateway's models ignore) do not stop the import.
      failOnWarnings: false,
      deployOptions: {
        stageName: STAGE,
        throttlingBurstLimit: THROTTLE_BURST,
        throttlingRateLimit: THROTTLE_RATE,
      },
    });

    // API Gateway may invoke each function for its own operations only, and the authorizer as an
    // authorizer of this API only.
    const principal = new iam.ServicePrincipal('apigateway.amazonaws.com');
    const seen = new Set<string>();
    for (const { method, path } of operationsOf(definition)) {
      const name = functionOf(method, path);
      const key = `${name} ${method} ${path}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const resourcePath = path.replace(/\{[^/}]+\}/g, '*');
      props.functions[name].addPermission(`ApiInvoke-${method}-${path.replace(/[^A-Za-z0-9]/g, '')}`, {
        principal,
        action: 'lambda:InvokeFunction',
        sourceArn: this.api.arnForExecuteApi(method.toUpperCase(), resourcePath, '*'),
      });
    }
    props.authorizer.addPermission('ApiAuthorizer', {
      principal,
      action: 'lambda:InvokeFunction',
      sourceArn: Stack.of(this).formatArn({
        service: 'execute-api',
        resource: this.api.restApiId,
        resourceName: 'authorizers/*',
      }),
    });
  }
}
