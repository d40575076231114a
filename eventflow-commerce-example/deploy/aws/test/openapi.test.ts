/** The OpenAPI 3.1 -> API Gateway conversion, on hand-made schemas and on the real document. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { functionOf } from '../lib/contract';
import {
  BEARER_SCHEME,
  GATEWAY_RESPONSES,
  downgradeSchema,
  downgradeTo30,
  operationsOf,
  sanitizeModelNames,
  toApiGatewayDefinition,
} from '../lib/openapi';
import { Json, readJson } from './helpers';

const appDocument = () => readJson('api-gateway/openapi.json');

const options = {
  integrationUri: (method: string, path: string) => `uri:${functionOf(method, path)}`,
  authorizerUri: 'uri:authorizer',
  authorizerTtlSeconds: 0,
};

/** Every value in `doc` whose key is `key`, with its JSON path. */
function findKey(doc: unknown, key: string, at = '$'): { path: string; value: unknown }[] {
  const out: { path: string; value: unknown }[] = [];
  if (Array.isArray(doc)) {
    doc.forEach((v, i) => out.push(...findKey(v, key, `${at}[${i}]`)));
  } else if (doc && typeof doc === 'object') {
    for (const [k, v] of Object.entries(doc)) {
      if (k === key) out.push({ path: `${at}.${k}`, value: v });
      out.push(...findKey(v, key, `${at}.${k}`));
    }
  }
  return out;
}

/** The schemas of a 3.x document: components and every schema under paths. */
function schemasOf(doc: Json): unknown[] {
  return [...Object.values(doc.components?.schemas ?? {}), ...findKey(doc.paths, 'schema').map((f) => f.value)];
}

describe('downgradeSchema', () => {
  it('turns a type array with null into nullable', () => {
    assert.deepEqual(downgradeSchema({ type: ['string', 'null'] }), { type: 'string', nullable: true });
    assert.deepEqual(downgradeSchema({ type: ['integer'] }), { type: 'integer' });
    assert.deepEqual(downgradeSchema({ type: 'null' }), { nullable: true });
    assert.deepEqual(downgradeSchema({ type: ['string', 'integer', 'null'] }), {
      nullable: true,
      anyOf: [{ type: 'string' }, { type: 'integer' }],
    });
  });

  it('turns oneOf [null, $ref] into a nullable allOf', () => {
    assert.deepEqual(downgradeSchema({ oneOf: [{ type: 'null' }, { $ref: '#/components/schemas/Address' }] }), {
      nullable: true,
      allOf: [{ $ref: '#/components/schemas/Address' }],
    });
    assert.deepEqual(downgradeSchema({ anyOf: [{ type: 'string', maxLength: 3 }, { type: 'null' }] }), {
      nullable: true,
      type: 'string',
      maxLength: 3,
    });
  });

  it('keeps the first of examples, turns const into enum and exclusive bounds into flags', () => {
    assert.deepEqual(downgradeSchema({ type: 'string', examples: ['a', 'b'] }), { type: 'string', example: 'a' });
    assert.deepEqual(downgradeSchema({ const: 'Bearer' }), { enum: ['Bearer'] });
    assert.deepEqual(downgradeSchema({ type: 'number', exclusiveMinimum: 0, exclusiveMaximum: 10 }), {
      type: 'number',
      minimum: 0,
      exclusiveMinimum: true,
      maximum: 10,
      exclusiveMaximum: true,
    });
  });

  it('wraps a $ref with siblings and drops 2020-12-only keywords', () => {
    assert.deepEqual(downgradeSchema({ $ref: '#/components/schemas/A', description: 'the a' }), {
      description: 'the a',
      allOf: [{ $ref: '#/components/schemas/A' }],
    });
    assert.deepEqual(
      downgradeSchema({ $schema: 'https://json-schema.org/draft/2020-12/schema', type: 'string', contentMediaType: 'text/plain' }),
      { type: 'string' },
    );
    assert.deepEqual(downgradeSchema(true), {});
    assert.deepEqual(downgradeSchema(false), { not: {} });
  });

  it('recurses into properties, items, additionalProperties and combinators, leaving property names alone', () => {
    const out = downgradeSchema({
      type: 'object',
      properties: {
        const: { type: ['string', 'null'] },
        examples: { type: 'array', items: { type: ['integer', 'null'], examples: [1] } },
      },
      additionalProperties: { type: ['boolean', 'null'] },
      allOf: [{ type: ['object', 'null'] }],
    });
    assert.deepEqual(out, {
      type: 'object',
      properties: {
        const: { type: 'string', nullable: true },
        examples: { type: 'array', items: { type: 'integer', nullable: true, example: 1 } },
      },
      additionalProperties: { type: 'boolean', nullable: true },
      allOf: [{ type: 'object', nullable: true }],
    });
  });
});

describe('downgradeTo30 on the app document', () => {
  const original = appDocument();
  const doc: Json = downgradeTo30(original);

  it('is the app document: OpenAPI 3.1', () => {
    assert.match(original.openapi, /^3\.1\./);
  });

  it('is OpenAPI 3.0.1 with the same operations', () => {
    assert.equal(doc.openapi, '3.0.1');
    assert.deepEqual(
      operationsOf(doc).map((o) => `${o.method} ${o.path}`),
      operationsOf(original).map((o) => `${o.method} ${o.path}`),
    );
  });

  it('leaves no 3.1-only construct in any schema', () => {
    for (const schema of schemasOf(doc)) {
      for (const { path, value } of findKey(schema, 'type')) {
        // `type` may also be a property *name*; then its value is a schema object.
        assert.ok(typeof value === 'string' || (typeof value === 'object' && !Array.isArray(value)), `${path}`);
        assert.notEqual(value, 'null', path);
      }
      for (const keyword of ['const', '$schema', 'prefixItems', 'contentMediaType', 'unevaluatedProperties']) {
        for (const { path, value } of findKey(schema, keyword)) {
          assert.ok(typeof value === 'object' && value !== null && !Array.isArray(value) && 'type' in value, `${path}`);
        }
      }
      for (const { path, value } of findKey(schema, 'examples')) {
        assert.ok(!Array.isArray(value), `${path}: examples array`);
      }
      for (const { path, value } of findKey(schema, 'exclusiveMinimum')) {
        assert.equal(typeof value, 'boolean', path);
      }
    }
  });

  it('marks the app\'s optional values nullable', () => {
    const nullable = findKey(doc, 'nullable').map((f) => f.path);
    assert.ok(nullable.length > 0, 'the app document has optional fields (Option<T>)');
    const before = findKey(original, 'type').filter((f) => Array.isArray(f.value) && f.value.includes('null'));
    assert.equal(nullable.length, before.length, 'one nullable per [T, "null"] type');
  });

  it('resolves every $ref', () => {
    for (const { path, value } of findKey(doc, '$ref')) {
      const name = String(value).replace('#/components/schemas/', '');
      assert.ok(doc.components.schemas[name], `${path} -> ${value}`);
    }
  });

  it('does not change its input', () => {
    assert.deepEqual(original, appDocument());
  });

  it('passes a 3.0 document through and refuses others', () => {
    assert.deepEqual(downgradeTo30({ openapi: '3.0.3', paths: {} }), { openapi: '3.0.3', paths: {} });
    assert.throws(() => downgradeTo30({ swagger: '2.0' }), /not an OpenAPI document/);
    assert.throws(() => downgradeTo30({ openapi: '4.0.0' }), /not supported/);
  });

  it('drops the 3.1-only top-level members', () => {
    const out = downgradeTo30({
      openapi: '3.1.0',
      jsonSchemaDialect: 'x',
      webhooks: {},
      info: { title: 't', version: '1', summary: 's', license: { name: 'MIT', identifier: 'MIT' } },
      paths: {},
      components: { pathItems: {} },
    });
    assert.deepEqual(out, {
      openapi: '3.0.1',
      info: { title: 't', version: '1', license: { name: 'MIT' } },
      paths: {},
      components: {},
    });
  });
});

describe('toApiGatewayDefinition on the app document', () => {
  const original = appDocument();
  const def: Json = toApiGatewayDefinition(original, options);

  it('serves each of the four edge functions', () => {
    const served = new Set(operationsOf(def).map(({ method, path }) => functionOf(method, path)));
    assert.deepEqual([...served].sort(), ['auth-login', 'catalog-get', 'orders-get', 'orders-post']);
  });

  it('gives every operation a Lambda proxy integration to its function', () => {
    for (const { method, path, operation } of operationsOf(def)) {
      assert.deepEqual(operation['x-amazon-apigateway-integration'], {
        type: 'aws_proxy',
        httpMethod: 'POST',
        uri: `uri:${functionOf(method, path)}`,
        passthroughBehavior: 'when_no_match',
      });
    }
  });

  it('requires the bearer token on orders only, through the token authorizer', () => {
    const secured = operationsOf(def)
      .filter(({ operation }) => Array.isArray(operation.security) && operation.security.length > 0)
      .map(({ method, path }) => `${method} ${path}`);
    assert.deepEqual(secured.sort(), ['get /orders/{orderId}', 'post /orders']);
    for (const { operation } of operationsOf(def) as { operation: Json }[]) {
      for (const requirement of operation.security ?? []) {
        assert.deepEqual(Object.keys(requirement), [BEARER_SCHEME]);
      }
    }
    const scheme = def.components.securitySchemes[BEARER_SCHEME];
    assert.equal(scheme.type, 'apiKey');
    assert.equal(scheme.in, 'header');
    assert.equal(scheme.name, 'Authorization');
    assert.equal(scheme['x-amazon-apigateway-authtype'], 'custom');
    assert.deepEqual(
      { ...scheme['x-amazon-apigateway-authorizer'], identityValidationExpression: undefined },
      {
        type: 'token',
        authorizerUri: 'uri:authorizer',
        authorizerResultTtlInSeconds: 0,
        identitySource: 'method.request.header.Authorization',
        identityValidationExpression: undefined,
      },
    );
    const pattern = new RegExp(scheme['x-amazon-apigateway-authorizer'].identityValidationExpression);
    assert.ok(pattern.test('Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjdXN0b21lci0xIn0.c2lnbmF0dXJl'));
    assert.ok(!pattern.test('Basic dXNlcjpwYXNz'));
    assert.ok(!pattern.test(`Bearer ${'a'.repeat(2049)}`));
  });

  it('answers refusals in the app\'s error shape', () => {
    const responses = def['x-amazon-apigateway-gateway-responses'];
    assert.deepEqual(Object.keys(responses).sort(), Object.keys(GATEWAY_RESPONSES).sort());
    const unauthorized = JSON.parse(responses.UNAUTHORIZED.responseTemplates['application/json']);
    assert.deepEqual(Object.keys(unauthorized), ['error', 'message']);
    assert.equal(responses.UNAUTHORIZED.statusCode, '401');
    assert.equal(responses.THROTTLED.statusCode, '429');
  });

  it('is OpenAPI 3.0.1 and leaves its input alone', () => {
    assert.equal(def.openapi, '3.0.1');
    assert.deepEqual(original, appDocument());
  });

  it('refuses an operation no function serves', () => {
    const doc = appDocument();
    doc.paths['/sagas'] = { get: { responses: { '200': { description: 'ok' } } } };
    assert.throws(() => toApiGatewayDefinition(doc, options), /GET \/sagas, which no function serves/);
  });

  it('refuses security it cannot enforce', () => {
    const other = appDocument();
    other.components.securitySchemes.basic = { type: 'http', scheme: 'basic' };
    assert.throws(() => toApiGatewayDefinition(other, options), /security scheme basic/);
    const global = appDocument();
    global.security = [{ bearer: [] }];
    assert.throws(() => toApiGatewayDefinition(global, options), /document-wide/);
  });
});

describe('sanitizeModelNames', () => {
  it('makes model names alphanumeric and rewrites the references', () => {
    const out: Json = sanitizeModelNames({
      openapi: '3.0.1',
      paths: { '/x': { get: { responses: { '200': { content: { 'application/json': { schema: { $ref: '#/components/schemas/Page_Order.View' } } } } } } } },
      components: {
        schemas: {
          'Page_Order.View': { type: 'object', properties: { o: { $ref: '#/components/schemas/Order' } } },
          Order: { type: 'object' },
          PageOrderView: { type: 'string' },
        },
      },
    });
    assert.deepEqual(Object.keys(out.components.schemas).sort(), ['Order', 'PageOrderView', 'PageOrderView2']);
    assert.equal(
      out.paths['/x'].get.responses['200'].content['application/json'].schema.$ref,
      '#/components/schemas/PageOrderView2',
    );
    assert.equal(out.components.schemas.PageOrderView.type, 'string', 'a valid name keeps its schema');
    assert.throws(
      () => sanitizeModelNames({ components: { schemas: { A: { $ref: '#/components/schemas/B' } } } }),
      /names no schema/,
    );
  });
});
