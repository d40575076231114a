/**
 * The app's OpenAPI 3.1 document (utoipa) as an API Gateway REST API definition.
 *
 * API Gateway imports OpenAPI 3.0 (and Swagger 2.0), not 3.1, so the document is first
 * downgraded ({@link downgradeTo30}), then given API Gateway's extensions
 * ({@link toApiGatewayDefinition}): a Lambda proxy integration per operation, the `bearer`
 * scheme as a Lambda TOKEN authorizer, gateway responses in the app's error shape.
 *
 * Everything here is pure (JSON in, JSON out) so the unit tests run it on the real file.
 */

type Json = Record<string, unknown>;

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function clone<T>(value: T): T {
  return structuredClone(value);
}

/** Schema keywords of JSON Schema 2020-12 that OpenAPI 3.0's schema object does not have. */
const DROPPED_SCHEMA_KEYWORDS = [
  '$schema',
  '$id',
  '$anchor',
  '$dynamicAnchor',
  '$dynamicRef',
  '$comment',
  '$defs',
  'contentMediaType',
  'contentEncoding',
  'contentSchema',
  'prefixItems',
  'unevaluatedItems',
  'unevaluatedProperties',
  'dependentRequired',
  'dependentSchemas',
  'propertyNames',
  'patternProperties',
  'contains',
  'minContains',
  'maxContains',
  'if',
  'then',
  'else',
];

/** Whether `schema` is exactly `{ "type": "null" }` (how 3.1 spells "or null" in a oneOf). */
function isNullSchema(schema: unknown): boolean {
  return isObject(schema) && schema.type === 'null' && Object.keys(schema).length === 1;
}

/**
 * One schema, 3.1 -> 3.0:
 * - `type: [T, "null"]` -> `type: T, nullable: true` (several non-null types -> `anyOf`);
 *   `type: "null"` -> `nullable: true`;
 * - `oneOf`/`anyOf` with a `{type: "null"}` member -> the other members, `nullable: true` (a lone
 *   `$ref` member becomes `allOf: [$ref]`, since 3.0 ignores a `$ref`'s siblings);
 * - `examples: [..]` -> `example` (the first); `const: v` -> `enum: [v]`;
 * - numeric `exclusiveMinimum`/`exclusiveMaximum` -> `minimum`/`maximum` + boolean flag;
 * - a `$ref` with siblings -> `allOf: [{$ref}]` plus the siblings;
 * - boolean schemas -> `{}` (true) or `{not: {}}` (false);
 * - 2020-12-only keywords are dropped ({@link DROPPED_SCHEMA_KEYWORDS}).
 */
export function downgradeSchema(input: unknown): unknown {
  if (input === true) {
    return {};
  }
  if (input === false) {
    return { not: {} };
  }
  if (!isObject(input)) {
    return input;
  }
  const schema: Json = { ...input };
  for (const keyword of DROPPED_SCHEMA_KEYWORDS) {
    delete schema[keyword];
  }

  if (Array.isArray(schema.type)) {
    const types = schema.type.filter((t) => t !== 'null');
    if (types.length !== schema.type.length) {
      schema.nullable = true;
    }
    if (types.length === 1) {
      schema.type = types[0];
    } else if (types.length === 0) {
      delete schema.type;
    } else {
      delete schema.type;
      schema.anyOf = types.map((t) => ({ type: t }));
    }
  } else if (schema.type === 'null') {
    delete schema.type;
    schema.nullable = true;
  }

  for (const combinator of ['oneOf', 'anyOf'] as const) {
    const members = schema[combinator];
    if (!Array.isArray(members) || !members.some(isNullSchema)) {
      continue;
    }
    const rest = members.filter((m) => !isNullSchema(m));
    schema.nullable = true;
    delete schema[combinator];
    if (rest.length === 1 && isObject(rest[0]) && typeof rest[0].$ref === 'string') {
      schema.allOf = [...(Array.isArray(schema.allOf) ? schema.allOf : []), rest[0]];
    } else if (rest.length === 1 && isObject(rest[0])) {
      for (const [k, v] of Object.entries(rest[0])) {
        if (!(k in schema)) {
          schema[k] = v;
        }
      }
    } else if (rest.length > 1) {
      schema[combinator] = rest;
    }
  }

  if (Array.isArray(schema.examples)) {
    if (!('example' in schema) && schema.examples.length > 0) {
      schema.example = schema.examples[0];
    }
    delete schema.examples;
  }
  if ('const' in schema) {
    if (!('enum' in schema)) {
      schema.enum = [schema.const];
    }
    delete schema.const;
  }
  for (const [exclusive, bound] of [
    ['exclusiveMinimum', 'minimum'],
    ['exclusiveMaximum', 'maximum'],
  ] as const) {
    if (typeof schema[exclusive] === 'number') {
      schema[bound] = schema[exclusive];
      schema[exclusive] = true;
    }
  }

  if (typeof schema.$ref === 'string' && Object.keys(schema).length > 1) {
    const ref = schema.$ref;
    delete schema.$ref;
    schema.allOf = [{ $ref: ref }, ...(Array.isArray(schema.allOf) ? schema.allOf : [])];
  }

  // Sub-schemas.
  if (isObject(schema.properties)) {
    schema.properties = Object.fromEntries(
      Object.entries(schema.properties).map(([name, s]) => [name, downgradeSchema(s)]),
    );
  }
  if (schema.additionalProperties !== undefined && typeof schema.additionalProperties !== 'boolean') {
    schema.additionalProperties = downgradeSchema(schema.additionalProperties);
  }
  if (Array.isArray(schema.items)) {
    // Draft-4 tuple form; 3.0 wants one schema. Keep the first as the item schema.
    schema.items = schema.items.length > 0 ? downgradeSchema(schema.items[0]) : {};
  } else if (schema.items !== undefined) {
    schema.items = downgradeSchema(schema.items);
  }
  for (const combinator of ['allOf', 'anyOf', 'oneOf'] as const) {
    if (Array.isArray(schema[combinator])) {
      schema[combinator] = (schema[combinator] as unknown[]).map(downgradeSchema);
    }
  }
  if (schema.not !== undefined) {
    schema.not = downgradeSchema(schema.not);
  }
  return schema;
}

/** A media-type map (`content`): each `schema` downgraded. */
function downgradeContent(content: unknown): unknown {
  if (!isObject(content)) {
    return content;
  }
  return Object.fromEntries(
    Object.entries(content).map(([mediaType, media]) => {
      if (!isObject(media)) {
        return [mediaType, media];
      }
      const out: Json = { ...media };
      if (out.schema !== undefined) {
        out.schema = downgradeSchema(out.schema);
      }
      return [mediaType, out];
    }),
  );
}

/** A parameter or header object: its `schema` and `content`. */
function downgradeParameter(parameter: unknown): unknown {
  if (!isObject(parameter)) {
    return parameter;
  }
  const out: Json = { ...parameter };
  if (out.schema !== undefined) {
    out.schema = downgradeSchema(out.schema);
  }
  if (out.content !== undefined) {
    out.content = downgradeContent(out.content);
  }
  return out;
}

function mapValues(map: unknown, f: (value: unknown) => unknown): unknown {
  if (!isObject(map)) {
    return map;
  }
  return Object.fromEntries(Object.entries(map).map(([k, v]) => [k, f(v)]));
}

function downgradeResponse(response: unknown): unknown {
  if (!isObject(response)) {
    return response;
  }
  const out: Json = { ...response };
  if (out.headers !== undefined) {
    out.headers = mapValues(out.headers, downgradeParameter);
  }
  if (out.content !== undefined) {
    out.content = downgradeContent(out.content);
  }
  return out;
}

function downgradeRequestBody(body: unknown): unknown {
  if (!isObject(body)) {
    return body;
  }
  return { ...body, ...(body.content !== undefined ? { content: downgradeContent(body.content) } : {}) };
}

function downgradeOperation(operation: unknown): unknown {
  if (!isObject(operation)) {
    return operation;
  }
  const out: Json = { ...operation };
  if (Array.isArray(out.parameters)) {
    out.parameters = out.parameters.map(downgradeParameter);
  }
  if (out.requestBody !== undefined) {
    out.requestBody = downgradeRequestBody(out.requestBody);
  }
  if (out.responses !== undefined) {
    out.responses = mapValues(out.responses, downgradeResponse);
  }
  // Callbacks hold path items of their own; API Gateway does not use them.
  delete out.callbacks;
  return out;
}

function downgradePathItem(item: unknown): unknown {
  if (!isObject(item)) {
    return item;
  }
  const out: Json = { ...item };
  if (Array.isArray(out.parameters)) {
    out.parameters = out.parameters.map(downgradeParameter);
  }
  for (const method of HTTP_METHODS) {
    if (out[method] !== undefined) {
      out[method] = downgradeOperation(out[method]);
    }
  }
  return out;
}

/**
 * An OpenAPI 3.1 document as OpenAPI 3.0.1: the version, the 3.1-only top-level members
 * (`jsonSchemaDialect`, `webhooks`, `components.pathItems`, `info.summary`,
 * `info.license.identifier`) dropped, and every schema downgraded by {@link downgradeSchema}. A
 * 3.0 document passes through (its schemas are already 3.0). Anything else is refused.
 */
export function downgradeTo30(input: unknown): Json {
  if (!isObject(input) || typeof input.openapi !== 'string') {
    throw new Error('not an OpenAPI document (no `openapi` member)');
  }
  if (input.openapi.startsWith('3.0.')) {
    return clone(input);
  }
  if (!input.openapi.startsWith('3.1.')) {
    throw new Error(`OpenAPI ${input.openapi} is not supported: 3.1 or 3.0 expected`);
  }
  const doc: Json = clone(input);
  doc.openapi = '3.0.1';
  delete doc.jsonSchemaDialect;
  delete doc.webhooks;
  if (isObject(doc.info)) {
    delete doc.info.summary;
    if (isObject(doc.info.license)) {
      delete doc.info.license.identifier;
    }
  }
  doc.paths = mapValues(doc.paths ?? {}, downgradePathItem);
  if (isObject(doc.components)) {
    const c = doc.components;
    delete c.pathItems;
    if (c.schemas !== undefined) c.schemas = mapValues(c.schemas, downgradeSchema);
    if (c.parameters !== undefined) c.parameters = mapValues(c.parameters, downgradeParameter);
    if (c.headers !== undefined) c.headers = mapValues(c.headers, downgradeParameter);
    if (c.responses !== undefined) c.responses = mapValues(c.responses, downgradeResponse);
    if (c.requestBodies !== undefined) c.requestBodies = mapValues(c.requestBodies, downgradeRequestBody);
  }
  return doc;
}

/** Every `(method, path, operation)` of a document. */
export function operationsOf(doc: Json): { method: string; path: string; operation: Json }[] {
  const out: { method: string; path: string; operation: Json }[] = [];
  for (const [path, item] of Object.entries(isObject(doc.paths) ? doc.paths : {})) {
    if (!isObject(item)) continue;
    for (const method of HTTP_METHODS) {
      const operation = item[method];
      if (isObject(operation)) out.push({ method, path, operation });
    }
  }
  return out;
}

/**
 * Renames the models (`components.schemas`) to names API Gateway accepts (alphanumeric) and
 * rewrites the `$ref`s to them. utoipa names generic instantiations with `_` and `.`.
 */
export function sanitizeModelNames(doc: Json): Json {
  const schemas = isObject(doc.components) && isObject(doc.components.schemas) ? doc.components.schemas : undefined;
  if (!schemas) return doc;
  const valid = (name: string) => /^[A-Za-z0-9]+$/.test(name);
  // Valid names stay; the others take the first free alphanumeric name.
  const renamed = new Map<string, string>(Object.keys(schemas).filter(valid).map((n) => [n, n]));
  const taken = new Set<string>(renamed.keys());
  for (const name of Object.keys(schemas).filter((n) => !valid(n))) {
    const base = name.replace(/[^A-Za-z0-9]/g, '') || 'Model';
    let candidate = base;
    for (let i = 2; taken.has(candidate); i++) {
      candidate = `${base}${i}`;
    }
    taken.add(candidate);
    renamed.set(name, candidate);
  }
  const prefix = '#/components/schemas/';
  const rewrite = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(rewrite);
    if (!isObject(value)) return value;
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => {
        if (k === '$ref' && typeof v === 'string' && v.startsWith(prefix)) {
          const target = decodeURIComponent(v.slice(prefix.length).replace(/~1/g, '/').replace(/~0/g, '~'));
          const name = renamed.get(target);
          if (name === undefined) throw new Error(`$ref ${v} names no schema`);
          return [k, prefix + name];
        }
        return [k, rewrite(v)];
      }),
    );
  };
  const out = rewrite(doc) as Json;
  const components = out.components as Json;
  components.schemas = Object.fromEntries(
    Object.entries(components.schemas as Json).map(([name, schema]) => [renamed.get(name)!, schema]),
  );
  return out;
}

/** The name of the app's bearer security scheme (`src/platform/server.rs`). */
export const BEARER_SCHEME = 'bearer';

export interface ApiGatewayOptions {
  /**
   * The Lambda invocation URI of the function serving an operation: a CloudFormation value
   * (a CDK token string) such as
   * `arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/ARN/invocations`.
   */
  readonly integrationUri: (method: string, path: string) => string;
  /** The invocation URI of the authorizer function. */
  readonly authorizerUri: string;
  /** How long API Gateway caches an authorizer answer; 0 turns the cache off. */
  readonly authorizerTtlSeconds: number;
}

/**
 * API Gateway's answers when a request never reaches a function, in the app's error shape
 * (`{"error", "message"}`, `src/platform/error.rs`): a missing or refused token is the app's one
 * generic 401; a route API Gateway does not know (it says "Missing Authentication Token", 403)
 * is the app's 404; throttling is the app's 429.
 */
export const GATEWAY_RESPONSES: Record<string, { statusCode: string; error: string; message: string }> = {
  UNAUTHORIZED: { statusCode: '401', error: 'unauthorized', message: 'Missing or invalid token' },
  ACCESS_DENIED: { statusCode: '403', error: 'forbidden', message: 'Not allowed' },
  MISSING_AUTHENTICATION_TOKEN: { statusCode: '404', error: 'not_found', message: 'No such route' },
  THROTTLED: { statusCode: '429', error: 'too_many_requests', message: 'Too many requests; try again later' },
};

/**
 * The API Gateway definition of an OpenAPI 3.1 (or 3.0) document:
 * - 3.0.1 ({@link downgradeTo30}) with alphanumeric model names;
 * - per operation, `x-amazon-apigateway-integration`: Lambda proxy (`aws_proxy`, POST) to
 *   `integrationUri(method, path)`;
 * - the `bearer` scheme (HTTP bearer in the app's document) as an `apiKey` scheme on the
 *   `Authorization` header with a Lambda TOKEN authorizer, so the operations that list
 *   `security: [{bearer: []}]` are checked at the edge and the others stay open;
 * - {@link GATEWAY_RESPONSES}.
 * Any other security scheme is refused: nothing here would enforce it.
 */
export function toApiGatewayDefinition(input: unknown, options: ApiGatewayOptions): Json {
  const doc = sanitizeModelNames(downgradeTo30(input));
  const components: Json = isObject(doc.components) ? doc.components : {};
  doc.components = components;
  const schemes: Json = isObject(components.securitySchemes) ? components.securitySchemes : {};
  for (const name of Object.keys(schemes)) {
    if (name !== BEARER_SCHEME) {
      throw new Error(`security scheme ${name}: only ${BEARER_SCHEME} is deployed (as the Lambda authorizer)`);
    }
  }
  const operations = operationsOf(doc);
  const usesBearer = (operation: Json) =>
    Array.isArray(operation.security) &&
    operation.security.some((requirement) => isObject(requirement) && BEARER_SCHEME in requirement);
  for (const { method, path, operation } of operations) {
    if (Array.isArray(operation.security)) {
      for (const requirement of operation.security) {
        for (const name of Object.keys(isObject(requirement) ? requirement : {})) {
          if (name !== BEARER_SCHEME) {
            throw new Error(`${method.toUpperCase()} ${path}: security scheme ${name} is not deployed`);
          }
        }
      }
    }
    operation['x-amazon-apigateway-integration'] = {
      type: 'aws_proxy',
      httpMethod: 'POST',
      uri: options.integrationUri(method, path),
      passthroughBehavior: 'when_no_match',
    };
  }
  if (Array.isArray(doc.security) && doc.security.length > 0) {
    throw new Error('a document-wide `security` is not supported: list it per operation');
  }
  if (operations.some(({ operation }) => usesBearer(operation))) {
    schemes[BEARER_SCHEME] = {
      type: 'apiKey',
      name: 'Authorization',
      in: 'header',
      description: 'The app\'s bearer JWT ("Bearer <token>"), checked by the authorizer function.',
      'x-amazon-apigateway-authtype': 'custom',
      'x-amazon-apigateway-authorizer': {
        type: 'token',
        authorizerUri: options.authorizerUri,
        authorizerResultTtlInSeconds: options.authorizerTtlSeconds,
        identitySource: 'method.request.header.Authorization',
        // Refused without invoking the authorizer: no header, or not a bearer token of the
        // app's size (src/platform/auth.rs, MAX_TOKEN_BYTES = 2048).
        identityValidationExpression: '^Bearer [-0-9A-Za-z._~+/]{1,2048}=*$',
      },
    };
    components.securitySchemes = schemes;
  } else {
    delete components.securitySchemes;
  }
  doc['x-amazon-apigateway-gateway-responses'] = Object.fromEntries(
    Object.entries(GATEWAY_RESPONSES).map(([type, r]) => [
      type,
      {
        statusCode: r.statusCode,
        responseParameters: { 'gatewayresponse.header.Content-Type': "'application/json'" },
        responseTemplates: {
          'application/json': JSON.stringify({ error: r.error, message: r.message }),
        },
      },
    ]),
  );
  return doc;
}
