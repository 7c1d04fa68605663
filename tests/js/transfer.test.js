// @polkadot/api against a real dev node: what a wallet or dApp does first.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ApiPromise, WsProvider } from '@polkadot/api';
import { Keyring } from '@polkadot/keyring';
import { cryptoWaitReady } from '@polkadot/util-crypto';
import { startDevNode } from './harness.js';

let node;
let api;

before(async () => {
  await cryptoWaitReady();
  node = await startDevNode();
  api = await ApiPromise.create({ provider: new WsProvider(node.wsUrl), noInitWarn: true });
});

after(async () => {
  await api?.disconnect();
  await node?.stop();
});

test('chain name, token symbol and decimals', async () => {
  assert.equal((await api.rpc.system.chain()).toString(), 'Molting Development');
  assert.deepEqual(api.registry.chainTokens, ['MOLT']);
  assert.deepEqual(api.registry.chainDecimals, [12]);
  assert.equal(api.runtimeVersion.specName.toString(), 'molting');
});

test('Alice signs a transfer to Bob; the block has balances.Transfer', async () => {
  const keyring = new Keyring({ type: 'sr25519' });
  const alice = keyring.addFromUri('//Alice');
  const bob = keyring.addFromUri('//Bob');
  const amount = 5n * 10n ** 12n + 42n; // 5 MOLT and 42 planck

  const blockHash = await new Promise((ok, fail) => {
    api.tx.balances
      .transferKeepAlive(bob.address, amount)
      .signAndSend(alice, ({ status, dispatchError }) => {
        if (dispatchError) fail(new Error(dispatchError.toString()));
        // In dev mode a block can go from Ready straight to Finalized.
        else if (status.isInBlock) ok(status.asInBlock);
        else if (status.isFinalized) ok(status.asFinalized);
      })
      .catch(fail);
  });

  const events = await (await api.at(blockHash)).query.system.events();
  const transfers = events
    .map(({ event }) => event)
    .filter((e) => api.events.balances.Transfer.is(e))
    .map((e) => ({ from: e.data.from.toString(), to: e.data.to.toString(), amount: e.data.amount.toBigInt() }));
  assert.deepEqual(transfers, [{ from: alice.address, to: bob.address, amount }]);
});
