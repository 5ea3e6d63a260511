// The official TypeScript clients through a server's shutdown (driven by tests/test_shutdown.py).
//
// Usage: node shutdown_client.mjs URL TOKEN SLEEP_ID SECONDS ECHO_ID
// Each client kind connects and starts a call to SLEEP_ID that lasts SECONDS. After a line on stdin (sent once
// the server is draining), each kind makes a fresh call to ECHO_ID over a new connection. Prints one JSON line:
// {kind: {version, long, fresh}} where long and fresh are {isError, structuredContent} or {error}.
import { Client as ClientV2, StreamableHTTPClientTransport as TransportV2 } from "@modelcontextprotocol/client";
import { Client as ClientV1 } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport as TransportV1 } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { createInterface } from "node:readline";

const [url, token, sleepId, seconds, echoId] = process.argv.slice(2);
const requestInit = { headers: { Authorization: `Bearer ${token}` } };
const info = { name: "shutdown-test", version: "1.0.0" };

const KINDS = {
  "sdk1 2025-11-25": () => [new ClientV1(info), new TransportV1(new URL(url), { requestInit })],
  "client2 2025-11-25": () => [new ClientV2(info), new TransportV2(new URL(url), { requestInit })],
  "client2 2026-07-28": () => [
    new ClientV2(info, { versionNegotiation: { mode: { pin: "2026-07-28" } } }),
    new TransportV2(new URL(url), { requestInit }),
  ],
};

async function connect(kind) {
  const [client, transport] = KINDS[kind]();
  await client.connect(transport);
  const version = client.getNegotiatedProtocolVersion?.() ?? transport.protocolVersion;
  return { client, version };
}

async function outcome(promise) {
  try {
    const result = await promise;
    return { isError: result.isError ?? false, structuredContent: result.structuredContent ?? null };
  } catch (error) {
    return { error: String(error) };
  }
}

async function close(client) {
  try {
    await client.close();
  } catch {
    // The server may be gone by now: closing is not what is tested.
  }
}

const delay = { name: "d", directory_path: "/tests", uri: "x:d", metadata: { seconds: Number(seconds) } };
const sleep = { runnable_id: sleepId, resources: [{ name: "d", resource: delay }] };
const report = {};
const long = {};
for (const kind of Object.keys(KINDS)) {
  const { client, version } = await connect(kind);
  report[kind] = { version };
  long[kind] = { client, result: outcome(client.callTool({ name: "run_runnable", arguments: sleep }, undefined, { timeout: 30_000 })) };
}

const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once("line", resolve));
lines.close();
for (const kind of Object.keys(KINDS)) {
  report[kind].fresh = await outcome(
    (async () => {
      const { client } = await connect(kind);
      try {
        return await client.callTool({ name: "run_runnable", arguments: { runnable_id: echoId } });
      } finally {
        await close(client);
      }
    })(),
  );
}
for (const [kind, { client, result }] of Object.entries(long)) {
  report[kind].long = await result;
  await close(client);
}
console.log(JSON.stringify(report));
process.exit(0);
