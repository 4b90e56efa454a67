// Drives the real `consul` npm client against Ferry, one call per line of standard input.
//
// Usage: node consul_client.js <port> [<base URL>]  (the base URL ends in /v1, as the
// client's `baseUrl` option does; it defaults to http://127.0.0.1:<port>/v1)
// Each input line: {"call": "kv.get", "args": [...]}; each output line is
// {"ok": <result>} or {"error": "<message>", "status": <HTTP status or null>}.
'use strict';
const readline = require('readline');
const Consul = require('consul');

const options = { host: '127.0.0.1', port: Number(process.argv[2]) };
if (process.argv[3]) {
  options.baseUrl = process.argv[3];
}
const consul = new Consul(options);
const lines = readline.createInterface({ input: process.stdin });

lines.on('line', async (line) => {
  const { call, args } = JSON.parse(line);
  const path = call.split('.');
  const method = path.pop();
  const target = path.reduce((object, name) => object[name], consul);
  try {
    const result = await target[method](...(args || []));
    console.log(JSON.stringify({ ok: result === undefined ? null : result }));
  } catch (error) {
    const status = error.response ? error.response.statusCode : null;
    console.log(JSON.stringify({ error: error.message, status }));
  }
});
lines.on('close', () => process.exit(0));
