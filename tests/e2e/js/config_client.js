// Loads configuration from Ferry with the real `cloud-config-client` npm package and
// prints what the client computed.
//
// Usage: node config_client.js '{"endpoint": "...", "name": "...", "profiles": [...], "label": "..."}'
// Prints {"properties": {...}, "sources": [names]} or {"error": "..."} (exit 1).
'use strict';
const client = require('cloud-config-client');

client
  .load(JSON.parse(process.argv[2]))
  .then((config) => {
    const sources = config.raw.propertySources.map((source) => source.name);
    console.log(JSON.stringify({ properties: config.properties, sources }));
  })
  .catch((error) => {
    console.log(JSON.stringify({ error: String(error && error.message ? error.message : error) }));
    process.exit(1);
  });
