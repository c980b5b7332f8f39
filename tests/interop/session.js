// An independent OCPP-J client (ocpp-rpc in strict mode) run through the gateway by
// tests/e2e/test_interop.py. For each version: BootNotification, Heartbeat,
// StatusNotification, then it waits for the backend's Reset and answers it.
// Prints one JSON line with what happened; exits 1 on any failure, including a strict-mode
// validation failure of anything the gateway sent or answered.
'use strict';
const { RPCClient } = require('ocpp-rpc');

const ENDPOINT = process.env.ENDPOINT; // ws://127.0.0.1:<port>/ocpp
const PASSWORD = process.env.PASSWORD;
const NOW = new Date().toISOString();

const SESSIONS = [
  {
    protocol: 'ocpp1.6',
    identity: process.env.CID16,
    calls: [
      ['BootNotification', { chargePointVendor: 'interop', chargePointModel: 'ocpp-rpc' }],
      ['Heartbeat', {}],
      ['StatusNotification', { connectorId: 1, errorCode: 'NoError', status: 'Available' }],
    ],
    resetAnswer: { status: 'Accepted' },
  },
  {
    protocol: 'ocpp2.0.1',
    identity: process.env.CID201,
    calls: [
      ['BootNotification', { chargingStation: { model: 'ocpp-rpc', vendorName: 'interop' }, reason: 'PowerUp' }],
      ['Heartbeat', {}],
      ['StatusNotification', { timestamp: NOW, connectorStatus: 'Available', evseId: 1, connectorId: 1 }],
    ],
    resetAnswer: { status: 'Accepted' },
  },
];

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function run(session) {
  const report = { protocol: session.protocol, identity: session.identity, answers: {}, failures: [] };
  const client = new RPCClient({
    endpoint: ENDPOINT,
    identity: session.identity,
    password: PASSWORD,
    protocols: [session.protocol],
    strictMode: true,
    reconnect: false,
    callTimeoutMs: 10000,
  });
  client.on('strictValidationFailure', (event) => {
    report.failures.push(`strict validation: ${event.error && event.error.message}`);
  });
  let resetSeen;
  const reset = new Promise((resolve) => { resetSeen = resolve; });
  client.handle('Reset', ({ params }) => {
    report.reset = params;
    resetSeen();
    return session.resetAnswer;
  });
  client.handle(({ method }) => {
    report.failures.push(`unexpected call ${method}`);
    throw new Error(`unexpected call ${method}`);
  });
  try {
    await withTimeout(client.connect(), 10000, 'the connection');
    report.negotiated = client.protocol;
    for (const [method, params] of session.calls) {
      report.answers[method] = await client.call(method, params);
    }
    await withTimeout(reset, 10000, 'the backend Reset');
    // let the answer to the Reset leave before closing
    await new Promise((resolve) => setTimeout(resolve, 300));
  } catch (err) {
    report.failures.push(`${err.name}: ${err.message}`);
  } finally {
    await client.close({ code: 1000 }).catch(() => {});
  }
  return report;
}

(async () => {
  const reports = [];
  for (const session of SESSIONS) {
    reports.push(await run(session));
  }
  console.log(JSON.stringify(reports));
  process.exit(reports.every((r) => r.failures.length === 0) ? 0 : 1);
})();
