// A real, certified OpenID provider (oidc-provider) for the OAuth tests, on loopback only.
//
// node provider.mjs PORT JWKS_FILE CLIENTS_FILE
// The issuer is http://127.0.0.1:PORT/oidc (a path, as Keycloak's realms have). Access tokens for a resource
// (RFC 8707) are JWTs whose audience is the resource, except for the client "opaque-robot", whose are opaque.
// Prints the issuer once listening. A line "rotate FILE" on stdin signs with the keys of FILE from then on;
// GET /_requests lists the paths requested so far (the tests count JWKS fetches).

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';

import Provider from 'oidc-provider';

const [port, jwksFile, clientsFile] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}/oidc`;
const clients = JSON.parse(readFileSync(clientsFile, 'utf8'));
const requested = [];

function build(jwks) {
  const provider = new Provider(issuer, {
    jwks,
    clients,
    clientDefaults: { id_token_signed_response_alg: 'ES256' },
    scopes: ['openid', 'offline_access', 'mcp:tools', 'other'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      registration: { enabled: true },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client, oneOf) => oneOf,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => ({
          scope: 'mcp:tools other',
          audience: resource,
          accessTokenFormat: client.clientId === 'opaque-robot' ? 'opaque' : 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        }),
      },
    },
  });
  provider.on('server_error', (ctx, error) => console.error('server_error', error));
  return provider;
}

const load = (file) => JSON.parse(readFileSync(file, 'utf8'));
let handle = build(load(jwksFile)).callback();

createInterface({ input: process.stdin }).on('line', (line) => {
  const [command, file] = line.trim().split(' ');
  if (command === 'rotate') {
    handle = build(load(file)).callback();
    console.log('rotated');
  }
});

createServer((req, res) => {
  requested.push(req.url.split('?')[0]);
  if (req.url === '/_requests') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(requested));
  } else if (req.url.startsWith('/oidc/') || req.url === '/oidc') {
    // Mounted under /oidc as Express does it: the provider sees the rest, and builds its URLs with the prefix.
    req.originalUrl = req.url;
    req.url = req.url.slice('/oidc'.length) || '/';
    handle(req, res);
  } else {
    res.statusCode = 404;
    res.end();
  }
}).listen(Number(port), '127.0.0.1', () => console.log(issuer));
