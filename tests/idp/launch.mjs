// A real, OpenID Certified provider (the npm package oidc-provider) for intraport's
// end-to-end tests, configured to issue JWT access tokens (resource indicators) with
// Entra-like claims for the client-credentials grant. Loopback only.
//
//   node launch.mjs --keys FILE [--port N] [--rotate] [--tenant GUID]
//
// --keys FILE   private signing keys (a JWKS with private members); created with one
//               RSA-2048 key when missing. The first key signs; all are published.
// --rotate      generate a new key, put it first (it signs from now on), keep the old
//               ones published, save FILE, and serve.
// --port N      0 (default) asks the OS. Prints "READY <issuer>" once listening.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const keysFile = opt('keys');
if (!keysFile) {
  console.error('usage: launch.mjs --keys FILE [--port N] [--rotate] [--tenant GUID]');
  process.exit(2);
}
const tenant = opt('tenant', '4a7c1e2d-9b3f-4d6a-8e1c-2b5d7f9a0c3e');
const audience = 'api://intraport-idp';

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: randomUUID(), use: 'sig', alg: 'RS256' };
}

let keys = existsSync(keysFile) ? JSON.parse(readFileSync(keysFile, 'utf8')).keys : [newKey()];
if (args.includes('--rotate')) keys = [newKey(), ...keys];
writeFileSync(keysFile, JSON.stringify({ keys }));

const server = createServer();
server.listen(Number(opt('port', '0')), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    jwks: { keys },
    clients: [
      {
        client_id: 'svc-reader',
        client_secret: 'svc-reader-secret',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_post',
      },
    ],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'api.read',
          audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 3600,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    // Entra-shaped claims on every access token.
    extraTokenClaims: (ctx, token) => ({
      tid: tenant,
      oid: '0c5e8a1b-7d2f-4e3a-9b6c-1d4f7a2e5b8c',
      azp: token.clientId,
      azpacr: '1',
      idtyp: 'app',
      roles: ['Reader'],
      ver: '2.0',
    }),
  });
  server.on('request', provider.callback());
  console.log(`READY ${issuer}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
