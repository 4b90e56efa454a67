// Runs the real eureka-js-client against Ferry and reports what it sees.
//
// Usage: node eureka_client.js '<json options>'
//   {"host", "port", "servicePath", "instance": {...} | null, "useDelta": bool, "intervalMs": n}
// Prints one JSON line per event: {"event":"started"}, and after every registry fetch
// {"event":"registry","apps":{"APP":[{"id","host","port","status","metadata"}]}} with the instances the
// client exposes (it keeps only UP ones). SIGTERM stops the client (deregisters) and exits.
'use strict';
const { Eureka } = require('eureka-js-client');

const options = JSON.parse(process.argv[2]);
const quiet = () => {};
const client = new Eureka({
  instance: options.instance || undefined,
  eureka: {
    host: options.host,
    port: options.port,
    servicePath: options.servicePath || '/eureka/v2/apps/',
    registryFetchInterval: options.intervalMs || 1000,
    heartbeatInterval: options.intervalMs || 1000,
    registerWithEureka: Boolean(options.instance),
    fetchRegistry: true,
    maxRetries: 1,
  },
  shouldUseDelta: Boolean(options.useDelta),
  logger: { debug: quiet, info: quiet, warn: quiet, error: (...args) => console.error(...args) },
});

function report() {
  const apps = {};
  for (const [name, instances] of Object.entries(client.cache.app)) {
    apps[name] = instances.map((instance) => ({
      id: instance.instanceId || instance.hostName,
      host: instance.hostName,
      port: instance.port && instance.port.$,
      status: instance.status,
      metadata: instance.metadata || {},
    }));
  }
  console.log(JSON.stringify({ event: 'registry', apps }));
}

client.start((error) => {
  if (error) {
    console.log(JSON.stringify({ event: 'error', message: String(error) }));
    process.exit(1);
  }
  console.log(JSON.stringify({ event: 'started' }));
  report();
  setInterval(report, options.intervalMs || 1000);
});

process.on('SIGTERM', () => {
  client.stop(() => {
    console.log(JSON.stringify({ event: 'stopped' }));
    process.exit(0);
  });
});
