#!/usr/bin/env node
/**
 * The CDK app: one stack, `EventflowCommerce`.
 *
 * The stack is environment-agnostic (no account or region baked in): `cdk synth` works offline
 * without credentials, and `cdk deploy` targets the account and region of the caller's AWS
 * profile. Settings come from CDK context (`-c name=value`), see lib/config.ts and README.md.
 */
import { App, Tags } from 'aws-cdk-lib';

import { readConfig } from '../lib/config';
import { CommerceStack } from '../lib/stack';

const app = new App();
const config = readConfig((key) => app.node.tryGetContext(key));
const stack = new CommerceStack(app, 'EventflowCommerce', {
  description: 'eventflow commerce example: serverless (API Gateway, Lambda, DynamoDB, EventBridge, SQS, Step Functions)',
  config,
});
Tags.of(stack).add('project', 'eventflow-commerce');
app.synth();
