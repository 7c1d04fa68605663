// The job market and its judge end to end with @polkadot/api, as a developer, a miner and
// a validator would use them: Bob registers as a miner and Charlie as a validator, Alice
// posts a job with a hidden eval set, Bob claims it and submits an attestation signed in
// JS (sr25519 over the SCALE encoding pallet-jobs documents), Alice reveals her eval set,
// Charlie commits to a report (the commitment and its signature computed in JS from
// pallet-contribution's documentation) and reveals it, and Alice, Bob, Charlie and the
// treasury end exactly where the rules say. A forged attestation is rejected and moves
// nothing but its fee.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ApiPromise, WsProvider } from '@polkadot/api';
import { Keyring } from '@polkadot/keyring';
import { u8aConcat, stringToU8a } from '@polkadot/util';
import { cryptoWaitReady, decodeAddress, sha256AsU8a } from '@polkadot/util-crypto';
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
let charlieReport;
let dave;

before(async () => {
  await cryptoWaitReady();
  node = await startDevNode({ blockTimeMs: 500 });
  api = await ApiPromise.create({ provider: new WsProvider(node.wsUrl), noInitWarn: true });
  const keyring = new Keyring({ type: 'sr25519' });
  alice = keyring.addFromUri('//Alice');
  bob = keyring.addFromUri('//Bob');
  charlie = keyring.addFromUri('//Charlie');
  bobWorker = keyring.addFromUri('//Bob//worker'); // the miner's hot key, not its account
  charlieReport = keyring.addFromUri('//Charlie//report'); // the validator's report key
  dave = keyring.addFromUri('//Dave');
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
// The hidden eval set (by hash) and the salt of its commitment.
const EVAL = content(0xe0);
const EVAL_SALT = new Uint8Array(32).fill(0x5a);

function spec() {
  return {
    work: { Compute: { recipe: content(1), steps: 100, checkpointInterval: 10 } },
    // SHA-256(SHA-256(eval set) || salt), as pallet-contribution documents it.
    evalCommitment: sha256AsU8a(u8aConcat(EVAL.sha256, EVAL_SALT)),
    minImprovement: 10_000_000, // Perbill: 1%
    payout: 'Equal',
    requirements: { backend: null, minMemoryMib: 0, minCompletedJobs: 0 },
    replication: 1,
  };
}

/** The attestation and its signature by `key`, as the worker makes them. */
function attest(jobId, miner, key, tag = 9) {
  // The type as the metadata names it: the second argument of jobs.submitResult.
  const attestationType = api.tx.jobs.submitResult.meta.args[1].type.toString();
  const attestation = api.createType(attestationType, {
    jobId,
    genesisHash: api.genesisHash,
    miner: miner.address,
    recipeSha256: new Uint8Array(32).fill(1),
    resultSha256: new Uint8Array(32).fill(tag),
    resultUri: 'https://example.org/adapter.safetensors',
    checkpointRoot: new Uint8Array(32).fill(tag + 1),
    steps: 100,
    checkpointInterval: 10,
    finalTrainLossPpm: 1_234_567,
  });
  const message = u8aConcat(stringToU8a('molting/attestation/v3'), attestation.toU8a());
  return { attestation, signature: key.sign(message) };
}

/** `key`'s proof of possession for `account` (the pallets' documented `context ++ account`). */
function keyProof(context, key, account) {
  return key.sign(u8aConcat(stringToU8a(context), decodeAddress(account.address)));
}

async function head() {
  return (await api.rpc.chain.getHeader()).number.toNumber();
}

/** Resolves once the best block is past `n`. */
async function untilPast(n) {
  while ((await head()) <= n) await new Promise((r) => setTimeout(r, 200));
}

/** Posts a job with short deadlines: claim 6 blocks, submit 6 more, reveal 8, judge 12. */
async function postJob(budget) {
  const now = await head();
  const d = { claimBy: now + 6, submitBy: now + 12, revealBy: now + 20, judgeBy: now + 32 };
  const posted = await send(api.tx.jobs.postJob(spec(), budget, d), alice);
  assert.equal(posted.error, null);
  const ev = posted.events.find((e) => api.events.jobs.JobPosted.is(e));
  return { jobId: ev.data.jobId.toBigInt(), fee: posted.fee, deadlines: d };
}

/** A validator's commitment to `report` (pallet-contribution's documented encoding). */
function commitment(jobId, round, validator, report, salt) {
  const u64 = api.createType('u64', jobId).toU8a();
  const u8 = api.createType('u8', round).toU8a();
  return sha256AsU8a(u8aConcat(stringToU8a('molting/report/v1'), u64, u8, report.toU8a(), salt, decodeAddress(validator.address)));
}

test('a job judged by a validator in JS: register, post, claim, attest, reveal the eval, commit, reveal: every balance exact', async () => {
  const deposit = api.consts.jobs.minerDeposit.toBigInt();
  const feeRate = api.consts.jobs.protocolFee.toBigInt(); // Perbill
  const validatorRate = api.consts.jobs.validatorFee.toBigInt();
  const bond = api.consts.contribution.minValidatorBond.toBigInt();
  const [alice0, bob0, charlie0, treasury0] = [await free(alice.address), await free(bob.address), await free(charlie.address), await free(TREASURY)];
  const bobHeld0 = await held(bob.address);

  // A key proven for another account is refused (nobody registers a key they do not hold).
  const caps = { backend: 'cpu-x86_64-avx512', memoryMib: 16384 };
  const squat = await send(api.tx.jobs.registerMiner(bobWorker.publicKey, keyProof('molting/worker-key/v1', bobWorker, charlie), caps), bob);
  assert.equal(squat.error, 'jobs.BadKeyProof');
  const reg = await send(api.tx.jobs.registerMiner(bobWorker.publicKey, keyProof('molting/worker-key/v1', bobWorker, bob), caps), bob);
  assert.equal(reg.error, null);
  assert.equal(await held(bob.address), bobHeld0 + deposit);
  const vreg = await send(api.tx.contribution.registerValidator(charlieReport.publicKey, keyProof('molting/report-key/v1', charlieReport, charlie), bond), charlie);
  assert.equal(vreg.error, null);

  const budget = 100n * MOLT;
  const { jobId, fee: postFee, deadlines } = await postJob(budget);
  assert.equal(await held(alice.address), budget, 'the budget is on hold, not transferred');

  const claim = await send(api.tx.jobs.claimJob(jobId), bob);
  assert.equal(claim.error, null);
  const { attestation, signature } = attest(jobId, bob, bobWorker);
  const submit = await send(api.tx.jobs.submitResult(jobId, attestation, signature), bob);
  assert.equal(submit.error, null, 'a correctly signed attestation is accepted');
  assert.ok(submit.events.some((e) => api.events.jobs.ResultSubmitted.is(e)));

  // Every replica delivered: submissions close at once (the later deadlines move up as
  // much), Charlie, the only validator, is drawn, and Alice reveals her eval set.
  let found = await api.query.contribution.cases(jobId);
  while (found.isNone) {
    await new Promise((r) => setTimeout(r, 200));
    found = await api.query.contribution.cases(jobId);
  }
  const c = found.unwrap();
  assert.ok(c.judgeBy.toNumber() < deadlines.judgeBy, 'closed early: the judging deadline moved up');
  assert.deepEqual(c.seats.map((s) => s.validator.toString()), [charlie.address]);
  const reveal = await send(api.tx.contribution.revealEval(jobId, EVAL, EVAL_SALT), alice);
  assert.equal(reveal.error, null, 'the eval set matches its commitment');

  // Charlie's report: the training replays and is better than the base model.
  const reportType = api.tx.contribution.revealReport.meta.args[2].type.toString();
  const report = api.createType(reportType, {
    baseLossPpm: 2_000_000,
    results: [{ replay: 'Pass', lossPpm: 1_500_000, bitsPerBytePpm: 700_000 }],
  });
  const salt = new Uint8Array(32).fill(0xab);
  const hash = commitment(jobId, 0, charlie, report, salt);
  const message = u8aConcat(
    stringToU8a('molting/commit/v1'),
    api.genesisHash.toU8a(),
    api.createType('u64', jobId).toU8a(),
    api.createType('u8', 0).toU8a(),
    decodeAddress(charlie.address),
    hash,
  );
  const commit = await send(api.tx.contribution.commitReport(jobId, charlie.address, hash, charlieReport.sign(message)), charlie);
  assert.equal(commit.error, null, 'the commitment, signed by the report key, is accepted');
  await untilPast(c.commitBy.toNumber());
  const revealed = await send(api.tx.contribution.revealReport(jobId, charlie.address, report, salt), charlie);
  assert.equal(revealed.error, null, 'the report hashes to the commitment computed in JS');
  const settled = revealed.events.find((e) => api.events.jobs.ResultSettled.is(e));
  assert.equal(settled.data.grade.type, 'Pass', 'the last reveal rules at once');

  const validatorFee = (budget * validatorRate) / 1_000_000_000n;
  const protocolFee = ((budget - validatorFee) * feeRate) / 1_000_000_000n;
  assert.equal(settled.data.paid.toBigInt(), budget - validatorFee - protocolFee);
  assert.equal(settled.data.fee.toBigInt(), protocolFee);
  assert.equal(settled.data.validatorFee.toBigInt(), validatorFee);

  const bobFees = squat.fee + reg.fee + claim.fee + submit.fee;
  const aliceFees = postFee + reveal.fee;
  const charlieFees = vreg.fee + commit.fee + revealed.fee;
  assert.equal(await free(alice.address), alice0 - budget - aliceFees, 'Alice paid the budget and her fees');
  assert.equal(await held(alice.address), 0n, 'no escrow left behind');
  assert.equal(await free(bob.address), bob0 - deposit - bobFees + budget - validatorFee - protocolFee, 'Bob got the reward less the fees');
  assert.equal(await held(bob.address), bobHeld0 + deposit, 'only the miner deposit stays on hold');
  assert.equal(await free(charlie.address), charlie0 - bond - charlieFees + validatorFee, 'Charlie earned the validators\' fee');
  assert.equal(await held(charlie.address), bond, 'the bond stays on hold');
  assert.equal(await free(TREASURY), treasury0 + protocolFee + aliceFees + bobFees + charlieFees, 'treasury: protocol fee and transaction fees');
});

test('a forged attestation is rejected and nothing but its fee moves', async () => {
  // Bob is registered by the first test; Alice posts another job and Bob claims it.
  const { jobId } = await postJob(10n * MOLT);
  assert.equal((await send(api.tx.jobs.claimJob(jobId), bob)).error, null);
  const [aliceFree, aliceHeld, bobFree, bobHeld] = [
    await free(alice.address), await held(alice.address), await free(bob.address), await held(bob.address),
  ];

  // Signed by Dave's key, not by Bob's registered worker key.
  const { attestation, signature } = attest(jobId, bob, dave, 20);
  const forged = await send(api.tx.jobs.submitResult(jobId, attestation, signature), bob);
  assert.equal(forged.error, 'jobs.BadSignature');

  assert.equal(await free(bob.address), bobFree - forged.fee, 'Bob lost only the fee');
  assert.equal(await held(bob.address), bobHeld);
  assert.equal(await free(alice.address), aliceFree);
  assert.equal(await held(alice.address), aliceHeld);
  const job = (await api.query.jobs.jobs(jobId)).unwrap();
  assert.ok(job.claims[0].state.isWorking, 'the claim is still waiting for a real result');
});
