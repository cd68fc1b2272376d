import test from 'node:test';
import assert from 'node:assert/strict';
import { parseChallenges, type Challenge } from '../../src/upstream/auth/challenge.js';

function parse(...values: string[]): Challenge[] {
  return parseChallenges(values);
}

test('Docker Hub: one Bearer challenge with realm, service and a scope containing colons', () => {
  assert.deepEqual(
    parse('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'),
    [{
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull' },
    }],
  );
});

test('several challenges in one header value', () => {
  assert.deepEqual(parse('Basic realm="a", Bearer realm="b",service="c"'), [
    { scheme: 'basic', params: { realm: 'a' } },
    { scheme: 'bearer', params: { realm: 'b', service: 'c' } },
  ]);
});

test('several header values, each with its own challenges, in order', () => {
  assert.deepEqual(parse('Basic realm="a"', 'Bearer realm="b", Negotiate', 'Digest realm="d", qop="auth,auth-int"'), [
    { scheme: 'basic', params: { realm: 'a' } },
    { scheme: 'bearer', params: { realm: 'b' } },
    { scheme: 'negotiate', params: {} },
    { scheme: 'digest', params: { realm: 'd', qop: 'auth,auth-int' } },
  ]);
});

test('quoted strings keep commas, equals signs and escaped quotes', () => {
  const [c] = parse('Bearer realm="https://x/token?a=1,b=2",error="invalid_token",error_description="the token \\"x, y\\" expired"');
  assert.deepEqual(c, {
    scheme: 'bearer',
    params: { realm: 'https://x/token?a=1,b=2', error: 'invalid_token', error_description: 'the token "x, y" expired' },
  });
});

test('a backslash escapes any character inside quotes', () => {
  assert.deepEqual(parse('Bearer realm="a\\\\b\\c"')[0]!.params, { realm: 'a\\bc' });
});

test('the RFC 9110 example: Newauth with a title holding escaped quotes, then Basic', () => {
  assert.deepEqual(parse('Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"'), [
    { scheme: 'newauth', params: { realm: 'apps', type: '1', title: 'Login to "apps"' } },
    { scheme: 'basic', params: { realm: 'simple' } },
  ]);
});

test('token68 values, alone or followed by another challenge', () => {
  assert.deepEqual(parse('Negotiate YIIBeQ=='), [{ scheme: 'negotiate', params: {}, token68: 'YIIBeQ==' }]);
  assert.deepEqual(parse('NTLM TlRMTVNTUAABAAAAB4IIog=='), [{ scheme: 'ntlm', params: {}, token68: 'TlRMTVNTUAABAAAAB4IIog==' }]);
  assert.deepEqual(parse('Custom a/b+c~d.e-f_g'), [{ scheme: 'custom', params: {}, token68: 'a/b+c~d.e-f_g' }]);
  assert.deepEqual(parse('Basic abc==, Bearer realm="x"'), [
    { scheme: 'basic', params: {}, token68: 'abc==' },
    { scheme: 'bearer', params: { realm: 'x' } },
  ]);
  assert.deepEqual(parse('Negotiate abc123 , Basic realm=r'), [
    { scheme: 'negotiate', params: {}, token68: 'abc123' },
    { scheme: 'basic', params: { realm: 'r' } },
  ]);
});

test('a word after a comma is a new scheme, not a token68', () => {
  assert.deepEqual(parse('Basic, Negotiate'), [
    { scheme: 'basic', params: {} },
    { scheme: 'negotiate', params: {} },
  ]);
});

test('extra whitespace and tabs everywhere, around "=" too', () => {
  assert.deepEqual(parse('  Bearer \t  realm = "x" ,  service= y  ,scope =z   ,  '), [
    { scheme: 'bearer', params: { realm: 'x', service: 'y', scope: 'z' } },
  ]);
});

test('unquoted token values', () => {
  assert.deepEqual(parse('Bearer realm=r,service=reg.example,error=invalid_token')[0]!.params, {
    realm: 'r', service: 'reg.example', error: 'invalid_token',
  });
  assert.deepEqual(parse('Basic realm=Registry')[0]!.params, { realm: 'Registry' });
});

test('scheme and parameter names are lower-cased; values are not', () => {
  assert.deepEqual(parse('BEARER Realm="HTTPS://Auth/Token",SERVICE=Svc'), [
    { scheme: 'bearer', params: { realm: 'HTTPS://Auth/Token', service: 'Svc' } },
  ]);
});

test('a repeated parameter keeps its first value', () => {
  assert.deepEqual(parse('Bearer realm="first",realm="second"')[0]!.params, { realm: 'first' });
  assert.deepEqual(parse('Bearer realm="first",REALM="second"')[0]!.params, { realm: 'first' });
});

test('empty quoted values are kept', () => {
  assert.deepEqual(parse('Bearer realm="",service=""')[0]!.params, { realm: '', service: '' });
});

test('a bare scheme has no parameters', () => {
  assert.deepEqual(parse('Basic'), [{ scheme: 'basic', params: {} }]);
});

test('__proto__ and constructor are ordinary parameter names', () => {
  const [c] = parse('Bearer __proto__="x",constructor="y",realm="r"');
  assert.equal(Object.getPrototypeOf(c!.params), Object.prototype);
  assert.equal(Object.getOwnPropertyDescriptor(c!.params, '__proto__')?.value, 'x');
  assert.equal(c!.params['constructor'], 'y');
  assert.equal(c!.params['realm'], 'r');
  assert.equal(({} as Record<string, unknown>)['x'], undefined, 'Object.prototype untouched');
});

test('an unterminated quoted string runs to the end of the value', () => {
  assert.deepEqual(parse('Bearer realm="https://auth/token, service=s'), [
    { scheme: 'bearer', params: { realm: 'https://auth/token, service=s' } },
  ]);
  assert.deepEqual(parse('Bearer realm="abc\\'), [{ scheme: 'bearer', params: { realm: 'abc\\' } }]);
});

test('garbage yields what can be salvaged and never throws', () => {
  assert.deepEqual(parse(''), []);
  assert.deepEqual(parse('   '), []);
  assert.deepEqual(parse(',,,'), []);
  assert.deepEqual(parse('"'), []);
  assert.deepEqual(parse('='), []);
  assert.deepEqual(parse('==='), []);
  assert.deepEqual(parse('"just a quoted string"'), []);
  assert.deepEqual(parse('realm="no scheme"'), [], 'a parameter without a challenge is dropped');
  assert.deepEqual(parse('"junk" Bearer realm="x"'), [{ scheme: 'bearer', params: { realm: 'x' } }]);
  assert.deepEqual(parse('\u0000Bearer realm="x"'), [{ scheme: 'bearer', params: { realm: 'x' } }]);
  assert.deepEqual(parse('Bearer realm="a",,,,service="b"'), [{ scheme: 'bearer', params: { realm: 'a', service: 'b' } }]);
  assert.deepEqual(parse('Bearer realm="a" ; service="b"'), [{ scheme: 'bearer', params: { realm: 'a', service: 'b' } }]);
  assert.deepEqual(parse('Bearer realm=, service="b"'), [
    { scheme: 'bearer', params: { service: 'b' }, token68: 'realm=' },
  ], '`realm=` has no value, so it reads as a token68 (the grammar allows no empty token)');
});

test('random input never throws and always yields well-formed challenges', () => {
  const alphabet = ['Bearer', 'Basic', ' ', '\t', ',', '=', '"', '\\', 'realm', 'a', 'Z', '0', '/', '+', '~', ';', '\u00e9', '\u0000', '\n', '__proto__'];
  let seed = 12345;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  for (let i = 0; i < 5000; i++) {
    const parts = Array.from({ length: random(24) }, () => alphabet[random(alphabet.length)]!);
    const input = parts.join('');
    const result = parseChallenges([input, input.slice(1)]);
    for (const c of result) {
      assert.match(c.scheme, /^[!#$%&'*+\-.^_`|~0-9a-z]+$/, input);
      for (const [key, value] of Object.entries(c.params)) {
        assert.equal(key, key.toLowerCase(), input);
        assert.equal(typeof value, 'string', input);
      }
    }
  }
});
