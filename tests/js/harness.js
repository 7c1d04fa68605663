// Starts the real molting-node (--dev) on loopback for a test: own base path, free ports,
// killed when the test ends (and with the test process).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const REPO = resolve(import.meta.dirname, '..', '..');

export function nodeBinary() {
  if (process.env.MOLTING_NODE_BIN) return process.env.MOLTING_NODE_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(process.env.HOME, '.cache', 'molting', 'target');
  return join(target, 'debug', 'molting-node');
}

function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

async function rpc(port, method, params = []) {
  const res = await fetch(`http://127.0.0.1:${port}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  return (await res.json()).result;
}

/** Starts a dev node and resolves once it has produced block #1. */
export async function startDevNode({ blockTimeMs = 1000 } = {}) {
  const base = mkdtempSync(join(tmpdir(), 'molting-js-'));
  const [rpcPort, p2pPort, promPort] = [await freePort(), await freePort(), await freePort()];
  const logPath = join(base, 'node.log');
  const log = openSync(logPath, 'w');
  const child = spawn(nodeBinary(), [
    '--dev', '--dev-block-time', String(blockTimeMs),
    '--base-path', join(base, 'data'),
    '--rpc-port', String(rpcPort),
    '--prometheus-port', String(promPort),
    '--listen-addr', `/ip4/127.0.0.1/tcp/${p2pPort}`,
    '--no-telemetry', '--no-mdns',
  ], { stdio: ['ignore', log, log], cwd: REPO });
  const kill = () => { try { child.kill('SIGKILL'); } catch { /* already gone */ } };
  process.on('exit', kill);

  const node = {
    wsUrl: `ws://127.0.0.1:${rpcPort}`,
    log: () => readFileSync(logPath, 'utf8'),
    async stop() {
      process.off('exit', kill);
      if (child.exitCode === null) {
        const gone = new Promise((ok) => child.once('exit', ok));
        kill();
        await gone;
      }
      rmSync(base, { recursive: true, force: true });
    },
  };

  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) {
      const text = node.log();
      await node.stop();
      throw new Error(`molting-node exited early (${child.exitCode}):\n${text}`);
    }
    try {
      const header = await rpc(rpcPort, 'chain_getHeader');
      if (header && parseInt(header.number, 16) >= 1) return node;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      const text = node.log();
      await node.stop();
      throw new Error(`molting-node made no block in 120 s:\n${text}`);
    }
    await new Promise((ok) => setTimeout(ok, 250));
  }
}
