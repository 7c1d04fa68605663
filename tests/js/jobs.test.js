// The job market end to end with @polkadot/api, as a developer and a miner would use it:
// Bob registers as a miner, Alice posts a job, Bob claims it and submits an attestation
// signed in JS (sr25519 over the SCALE encoding pallet-jobs documents), Alice accepts,
// and Alice, Bob and the treasury end exactly where the rules say. A forged attestation
// is rejected and moves nothing but its fee.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ApiPromise, WsProvider } from '@polkadot/api';
import { Keyring } from '@polkadot/keyring';
import { u8aConcat, stringToU8a } from '@polkadot/util';
import { cryptoWaitReady } from '@polkadot/util-crypto';
import { startDevNode } from './harness.js';

const MOLT = 10n ** 12n;
// The treasury account: "modl" ++ "mlt/trsy", zero-padded to 32 bytes.
const TREASURY = u8aConcat(stringToU8a('modlmlt/trsy'), new Uint8Array(20));

let node;
let api;
let alice;
let bob;
let bobWorker;
let charlie;

before(async () => {
  await cryptoWaitReady();
  node = await startDevNode({ blockTimeMs: 500 });
  api = await ApiPromise.create({ provider: new WsProvider(node.wsUrl), noInitWarn: true });
  const keyring = new Keyring({ type: 'sr25519' });
  alice = keyring.addFromUri('//Alice');
  bob = keyring.addFromUri('//Bob');
  charlie = keyring.addFromUri('//Charlie');
  bobWorker = keyring.addFromUri('//Bob//worker'); // the miner's hot key, not its account
});

after(async () => {
  await api?.disconnect();
  await node?.stop();
});

/** Signs and sends; resolves with { blockHash, events, fee } of the transaction. */
function send(tx, signer) {
  return new Promise((ok, fail) => {
    tx.signAndSend(signer, ({ status, events, dispatchError }) => {
      if (!(status.isInBlock || status.isFinalized)) return;
      const blockHash = status.isInBlock ? status.asInBlock : status.asFinalized;
      const feeEvent = events.find(({ event }) => api.events.transactionPayment.TransactionFeePaid.is(event));
      const fee = feeEvent.event.data.actualFee.toBigInt();
      let error = null;
      if (dispatchError) {
        if (dispatchError.isModule) {
          const { section, name } = api.registry.findMetaError(dispatchError.asModule);
          error = `${section}.${name}`;
        } else {
          error = dispatchError.toString();
        }
      }
      ok({ blockHash, events: events.map(({ event }) => event), fee, error });
    }).catch(fail);
  });
}

async function free(who, at) {
  const api_ = at ? await api.at(at) : api;
  return (await api_.query.system.account(who)).data.free.toBigInt();
}

async function held(who, at) {
  const api_ = at ? await api.at(at) : api;
  return (await api_.query.system.account(who)).data.reserved.toBigInt();
}

const content = (tag) => ({ sha256: new Uint8Array(32).fill(tag), uri: `https://example.org/blob-${tag}` });

function spec() {
  return {
    recipe: content(1),
    evalCommitment: new Uint8Array(32).fill(4),
    steps: 100,
    checkpointInterval: 10,
    requirements: { backend: null, minMemoryMib: 0, minCompletedJobs: 0 },
    replication: 1,
  };
}

/** The attestation and its signature by `key`, as the worker makes them. */
function attest(jobId, miner, key) {
  // The type as the metadata names it: the second argument of jobs.submitResult.
  const attestationType = api.tx.jobs.submitResult.meta.args[1].type.toString();
  const attestation = api.createType(attestationType, {
    jobId,
    genesisHash: api.genesisHash,
    miner: miner.address,
    recipeSha256: new Uint8Array(32).fill(1),
    resultSha256: new Uint8Array(32).fill(9),
    resultUri: 'https://example.org/adapter.safetensors',
    checkpointRoot: new Uint8Array(32).fill(8),
    steps: 100,
    finalTrainLossPpm: 1_234_567,
  });
  const message = u8aConcat(stringToU8a('molting/attestation/v2'), attestation.toU8a());
  return { attestation, signature: key.sign(message) };
}

async function postJob(budget) {
  const now = (await api.rpc.chain.getHeader()).number.toNumber();
  const posted = await send(
    api.tx.jobs.postJob(spec(), budget, { claimBy: now + 200, submitBy: now + 400 }),
    alice,
  );
  assert.equal(posted.error, null);
  const ev = posted.events.find((e) => api.events.jobs.JobPosted.is(e));
  return { jobId: ev.data.jobId.toBigInt(), fee: posted.fee };
}

test('register, post, claim, submit a JS-signed attestation, accept: every balance exact', async () => {
  const deposit = api.consts.jobs.minerDeposit.toBigInt();
  const feeRate = api.consts.jobs.protocolFee.toBigInt(); // Perbill
  const [alice0, bob0, treasury0] = [await free(alice.address), await free(bob.address), await free(TREASURY)];
  const bobHeld0 = await held(bob.address);

  const reg = await send(api.tx.jobs.registerMiner(bobWorker.publicKey, { backend: 'cpu-x86_64-avx512', memoryMib: 16384 }), bob);
  assert.equal(reg.error, null);
  assert.equal(await held(bob.address), bobHeld0 + deposit);

  const budget = 100n * MOLT;
  const { jobId, fee: postFee } = await postJob(budget);
  assert.equal(await held(alice.address), budget, 'the budget is on hold, not transferred');

  const claim = await send(api.tx.jobs.claimJob(jobId), bob);
  assert.equal(claim.error, null);

  const { attestation, signature } = attest(jobId, bob, bobWorker);
  const submit = await send(api.tx.jobs.submitResult(jobId, attestation, signature), bob);
  assert.equal(submit.error, null, 'a correctly signed attestation is accepted');
  assert.ok(submit.events.some((e) => api.events.jobs.ResultSubmitted.is(e)));

  const accept = await send(api.tx.jobs.acceptResult(jobId, bob.address), alice);
  assert.equal(accept.error, null);
  const accepted = accept.events.find((e) => api.events.jobs.ResultAccepted.is(e));
  const protocolFee = (budget * feeRate) / 1_000_000_000n;
  assert.equal(accepted.data.paid.toBigInt(), budget - protocolFee);
  assert.equal(accepted.data.fee.toBigInt(), protocolFee);

  const bobFees = reg.fee + claim.fee + submit.fee;
  const aliceFees = postFee + accept.fee;
  assert.equal(await free(alice.address), alice0 - budget - aliceFees, 'Alice paid the budget and her fees');
  assert.equal(await held(alice.address), 0n, 'no escrow left behind');
  assert.equal(await free(bob.address), bob0 - deposit - bobFees + budget - protocolFee, 'Bob got the reward less the protocol fee');
  assert.equal(await held(bob.address), bobHeld0 + deposit, 'only the miner deposit stays on hold');
  assert.equal(await free(TREASURY), treasury0 + protocolFee + aliceFees + bobFees, 'treasury: protocol fee and transaction fees');
});

test('a forged attestation is rejected and nothing but its fee moves', async () => {
  // Bob is registered by the first test; Alice posts another job and Bob claims it.
  const { jobId } = await postJob(10n * MOLT);
  assert.equal((await send(api.tx.jobs.claimJob(jobId), bob)).error, null);
  const [aliceFree, aliceHeld, bobFree, bobHeld] = [
    await free(alice.address), await held(alice.address), await free(bob.address), await held(bob.address),
  ];

  // Signed by Charlie's key, not by Bob's registered worker key.
  const { attestation, signature } = attest(jobId, bob, charlie);
  const forged = await send(api.tx.jobs.submitResult(jobId, attestation, signature), bob);
  assert.equal(forged.error, 'jobs.BadSignature');

  assert.equal(await free(bob.address), bobFree - forged.fee, 'Bob lost only the fee');
  assert.equal(await held(bob.address), bobHeld);
  assert.equal(await free(alice.address), aliceFree);
  assert.equal(await held(alice.address), aliceHeld);
  const job = (await api.query.jobs.jobs(jobId)).unwrap();
  assert.ok(job.claims[0].state.isWorking, 'the claim is still waiting for a real result');
});
