/** The REST API in the template: integrations, authorizer, permissions, throttling. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { AUTHORIZER_TTL_SECONDS, STAGE, THROTTLE_BURST, THROTTLE_RATE } from '../lib/api';
import { HTTP_FUNCTIONS } from '../lib/contract';
import { BEARER_SCHEME, operationsOf } from '../lib/openapi';
import { Json, defaultTemplate, fnOf, readJson, referencedIds, resourcesOf } from './helpers';

const template = defaultTemplate();
const [apiId, api] = resourcesOf(template, 'AWS::ApiGateway::RestApi')[0];
const body: Json = api.Properties.Body;

/** The logical id of the function an integration or authorizer URI invokes. */
function invoked(uri: Json): string {
  const sub = uri['Fn::Sub'];
  assert.ok(Array.isArray(sub), 'the URI is an Fn::Sub');
  assert.equal(
    sub[0],
    'arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${FunctionArn}/invocations',
  );
  return sub[1].FunctionArn['Fn::GetAtt'][0];
}

const expected: Record<string, { handler: string; bearer: boolean }> = {
  'post /auth/login': { handler: 'auth-login', bearer: false },
  'get /catalog': { handler: 'catalog-get', bearer: false },
  'get /catalog/{productId}': { handler: 'catalog-get', bearer: false },
  'post /orders': { handler: 'orders-post', bearer: true },
  'get /orders/{orderId}': { handler: 'orders-get', bearer: true },
};

describe('the API definition', () => {
  it('is inline OpenAPI 3.0.1 (not an S3 asset)', () => {
    assert.equal(body.openapi, '3.0.1');
    assert.equal(api.Properties.BodyS3Location, undefined);
  });

  it('has the app document\'s operations, each integrated with its function, the bearer ones behind the authorizer', () => {
    const appOps = operationsOf(readJson('api-gateway/openapi.json')).map((o) => `${o.method} ${o.path}`);
    const ops = operationsOf(body);
    assert.deepEqual(ops.map((o) => `${o.method} ${o.path}`).sort(), appOps.sort());
    for (const { method, path, operation } of ops) {
      const key = `${method} ${path}`;
      const want = expected[key];
      assert.ok(want, `unexpected operation ${key}: add it to this test`);
      const integration = (operation as Json)['x-amazon-apigateway-integration'];
      assert.equal(integration.type, 'aws_proxy', key);
      assert.equal(integration.httpMethod, 'POST', key);
      assert.equal(invoked(integration.uri), fnOf(template, want.handler).id, key);
      const security = JSON.stringify(operation.security ?? []);
      assert.equal(security.includes(BEARER_SCHEME), want.bearer, key);
    }
    const served = new Set(ops.map((o) => expected[`${o.method} ${o.path}`].handler));
    assert.deepEqual([...served].sort(), [...HTTP_FUNCTIONS].sort(), 'four functions, four kinds of operation');
  });

  it('authorizes with the authorizer function, uncached, on the Authorization header', () => {
    const authorizer = body.components.securitySchemes[BEARER_SCHEME]['x-amazon-apigateway-authorizer'];
    assert.equal(authorizer.type, 'token');
    assert.equal(authorizer.identitySource, 'method.request.header.Authorization');
    assert.equal(authorizer.authorizerResultTtlInSeconds, AUTHORIZER_TTL_SECONDS);
    assert.equal(invoked(authorizer.authorizerUri), fnOf(template, 'authorizer').id);
  });
});

describe('permissions', () => {
  const permissions = resourcesOf(template, 'AWS::Lambda::Permission');

  it('API Gateway may invoke each HTTP function for its own operations of this API only', () => {
    for (const [key, { handler }] of Object.entries(expected)) {
      const [method, path] = key.split(' ');
      const fnId = fnOf(template, handler).id;
      const found = permissions.filter(([, p]) => {
        const source = JSON.stringify(p.Properties.SourceArn);
        return (
          referencedIds(p.Properties.FunctionName).has(fnId) &&
          referencedIds(p.Properties.SourceArn).has(apiId) &&
          source.includes(`/${method.toUpperCase()}${path.replace(/\{[^}]+\}/g, '*')}"`)
        );
      });
      assert.equal(found.length, 1, key);
      assert.equal(found[0][1].Properties.Principal, 'apigateway.amazonaws.com');
      assert.equal(found[0][1].Properties.Action, 'lambda:InvokeFunction');
    }
  });

  it('the authorizer may be invoked as an authorizer of this API only; no other function is invocable', () => {
    const authorizerId = fnOf(template, 'authorizer').id;
    const mine = permissions.filter(([, p]) => referencedIds(p.Properties.FunctionName).has(authorizerId));
    assert.equal(mine.length, 1);
    assert.ok(referencedIds(mine[0][1].Properties.SourceArn).has(apiId));
    assert.match(JSON.stringify(mine[0][1].Properties.SourceArn), /authorizers\/\*/);
    const invocable = new Set(permissions.flatMap(([, p]) => [...referencedIds(p.Properties.FunctionName)]));
    assert.deepEqual(
      [...invocable].sort(),
      [...HTTP_FUNCTIONS, 'authorizer'].map((h) => fnOf(template, h).id).sort(),
    );
    for (const [, p] of permissions) assert.ok(p.Properties.SourceArn, 'every permission names its source');
  });
});

describe('stage', () => {
  it(`throttles at a burst of ${THROTTLE_BURST} and ${THROTTLE_RATE} requests a second`, () => {
    const [, stage] = resourcesOf(template, 'AWS::ApiGateway::Stage')[0];
    assert.equal(stage.Properties.StageName, STAGE);
    const all = stage.Properties.MethodSettings.find((m: Json) => m.HttpMethod === '*' && m.ResourcePath === '/*');
    assert.equal(all.ThrottlingBurstLimit, THROTTLE_BURST);
    assert.equal(all.ThrottlingRateLimit, THROTTLE_RATE);
  });

  it('is regional, with no account-wide CloudWatch role', () => {
    assert.deepEqual(api.Properties.EndpointConfiguration.Types, ['REGIONAL']);
    template.resourceCountIs('AWS::ApiGateway::Account', 0);
  });
});
