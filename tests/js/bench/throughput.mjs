// Throughput of the job market on a real dev node, beside plain balance transfers, in one
// run: how many post_job, claim_job, submit_result and transfers fit in one block by
// weight (and length), and the sustained rate at which the node includes them.
//
//   node tests/js/bench/throughput.mjs            (N=256 of each; N=... to change)
//
// Uses the dev node the tests use (MOLTING_NODE_BIN, else the debug build), with the
// default dev block time of 3 s.
import { ApiPromise, WsProvider } from '@polkadot/api';
import { Keyring } from '@polkadot/keyring';
import { u8aConcat, stringToU8a } from '@polkadot/util';
import { cryptoWaitReady, decodeAddress } from '@polkadot/util-crypto';
import { startDevNode } from '../harness.js';

const N = Number(process.env.N ?? 256);
const BLOCK_MS = Number(process.env.BLOCK_MS ?? 3000);
const MOLT = 10n ** 12n;

await cryptoWaitReady();
const node = await startDevNode({ blockTimeMs: BLOCK_MS });
const api = await ApiPromise.create({ provider: new WsProvider(node.wsUrl), noInitWarn: true });
const keyring = new Keyring({ type: 'sr25519' });
const alice = keyring.addFromUri('//Alice');
const bob = keyring.addFromUri('//Bob');

const content = (tag) => ({ sha256: new Uint8Array(32).fill(tag), uri: `https://example.org/blob-${tag}` });
// A verified compute job, as tests/js/jobs.test.js posts it.
const spec = {
  work: { Compute: { recipe: content(1), steps: 100, checkpointInterval: 10 } },
  evalCommitment: new Uint8Array(32).fill(4),
  minImprovement: 10_000_000, // Perbill: 1%
  payout: 'Equal',
  requirements: { backend: null, minMemoryMib: 0, minCompletedJobs: 0 },
  replication: 1,
};
const attestationType = api.tx.jobs.submitResult.meta.args[1].type.toString();
function attest(jobId, miner, key) {
  const attestation = api.createType(attestationType, {
    jobId, genesisHash: api.genesisHash, miner: miner.address,
    recipeSha256: new Uint8Array(32).fill(1),
    resultSha256: new Uint8Array(32).fill(9), resultUri: 'https://example.org/adapter',
    checkpointRoot: new Uint8Array(32).fill(8), steps: 100, checkpointInterval: 10, finalTrainLossPpm: 1_000_000,
  });
  const message = u8aConcat(stringToU8a('molting/attestation/v3'), attestation.toU8a());
  return [attestation, key.sign(message)];
}

/** How many of `tx` fit in one block, by weight (ref time, proof size) and by length. */
async function perBlock(tx, signer) {
  const signed = await tx.signAsync(signer, { nonce: -1 });
  const info = await api.call.transactionPaymentApi.queryInfo(signed.toU8a(), signed.encodedLength);
  const weights = api.consts.system.blockWeights;
  const normal = weights.perClass.normal;
  const max = normal.maxTotal.unwrap();
  const base = normal.baseExtrinsic;
  const ref = max.refTime.toBigInt() / (info.weight.refTime.toBigInt() + base.refTime.toBigInt());
  const proof = max.proofSize.toBigInt() / (info.weight.proofSize.toBigInt() + base.proofSize.toBigInt() || 1n);
  const length = BigInt(api.consts.system.blockLength.max.normal.toNumber() / signed.encodedLength | 0);
  const fits = [ref, proof, length].reduce((a, b) => (a < b ? a : b));
  const limit = fits === ref ? 'ref time' : fits === proof ? 'proof size' : 'length';
  return { fits: Number(fits), limit, refTime: info.weight.refTime.toBigInt(), proofSize: info.weight.proofSize.toBigInt() };
}

/**
 * Submits every signed transaction at once and waits until all are in blocks. Returns the
 * sustained rate (included per second, from submission to the last inclusion) and the
 * most included in one block.
 */
async function sustained(label, signedTxs) {
  const hashes = new Set(signedTxs.map((t) => t.hash.toHex()));
  const total = hashes.size;
  let perBlockMax = 0;
  let failed = 0;
  const start = Date.now();
  let lastInclusion = start;
  const done = new Promise((ok) => {
    const unsub = api.rpc.chain.subscribeNewHeads(async (header) => {
      const block = await api.rpc.chain.getBlock(header.hash);
      const events = await (await api.at(header.hash)).query.system.events();
      let here = 0;
      block.block.extrinsics.forEach((ext, index) => {
        if (!hashes.delete(ext.hash.toHex())) return;
        here += 1;
        const failedHere = events.some(({ phase, event }) =>
          phase.isApplyExtrinsic && phase.asApplyExtrinsic.eq(index) && api.events.system.ExtrinsicFailed.is(event));
        if (failedHere) failed += 1;
      });
      if (here > 0) lastInclusion = Date.now();
      perBlockMax = Math.max(perBlockMax, here);
      if (hashes.size === 0) (await unsub)() || ok();
    });
  });
  await Promise.all(signedTxs.map((t) => api.rpc.author.submitExtrinsic(t)));
  await done;
  const seconds = (lastInclusion - start) / 1000;
  if (failed > 0) throw new Error(`${label}: ${failed} of ${total} failed`);
  return { label, total, seconds, rate: total / seconds, perBlockMax };
}

async function signAll(calls, signer) {
  const first = (await api.rpc.system.accountNextIndex(signer.address)).toNumber();
  return Promise.all(calls.map((c, i) => c.signAsync(signer, { nonce: first + i, era: 0 })));
}

const results = [];
const capacity = [];
const now = async () => (await api.rpc.chain.getHeader()).number.toNumber();

// Miners: enough that none goes over MaxActiveClaims.
const maxClaims = api.consts.jobs.maxActiveClaims.toNumber();
const miners = Array.from({ length: Math.ceil(N / maxClaims) }, (_, i) => ({
  account: keyring.addFromUri(`//Bench//miner//${i}`),
  worker: keyring.addFromUri(`//Bench//miner//${i}//worker`),
}));
await sustained('fund miners', await signAll(
  miners.map((m) => api.tx.balances.transferKeepAlive(m.account.address, 1000n * MOLT)), alice));
await sustained('register miners', await Promise.all(miners.map((m) =>
  api.tx.jobs.registerMiner(m.worker.publicKey,
    m.worker.sign(u8aConcat(stringToU8a('molting/worker-key/v1'), decodeAddress(m.account.address))),
    { backend: 'cpu-x86_64-avx512', memoryMib: 16384 })
    .signAsync(m.account, { nonce: 0, era: 0 }))));

capacity.push(['balances.transferKeepAlive', await perBlock(api.tx.balances.transferKeepAlive(bob.address, MOLT), alice)]);
results.push(await sustained('balances.transferKeepAlive',
  await signAll(Array.from({ length: N }, () => api.tx.balances.transferKeepAlive(bob.address, MOLT)), alice)));

const h = await now();
// Deadlines spread over many blocks, so that no block settles many jobs at once.
const postCall = (i) => api.tx.jobs.postJob(spec, 2n * MOLT,
  { claimBy: h + 2000, submitBy: h + 4000 + i, revealBy: h + 4400 + i, judgeBy: h + 4800 + i });
capacity.push(['jobs.postJob', await perBlock(postCall(0), alice)]);
const firstJob = (await api.query.jobs.nextJobId()).toNumber();
results.push(await sustained('jobs.postJob', await signAll(Array.from({ length: N }, (_, i) => postCall(i)), alice)));

const jobOf = (i) => firstJob + i;
const minerOf = (i) => miners[Math.floor(i / maxClaims)];
capacity.push(['jobs.claimJob', await perBlock(api.tx.jobs.claimJob(jobOf(0)), minerOf(0).account)]);
results.push(await sustained('jobs.claimJob', await Promise.all(Array.from({ length: N }, (_, i) =>
  api.tx.jobs.claimJob(jobOf(i)).signAsync(minerOf(i).account, { nonce: 1 + (i % maxClaims), era: 0 })))));

const submitCall = (i) => api.tx.jobs.submitResult(jobOf(i), ...attest(jobOf(i), minerOf(i).account, minerOf(i).worker));
capacity.push(['jobs.submitResult', await perBlock(submitCall(0), minerOf(0).account)]);
results.push(await sustained('jobs.submitResult', await Promise.all(Array.from({ length: N }, (_, i) =>
  submitCall(i).signAsync(minerOf(i).account, { nonce: 1 + maxClaims + (i % maxClaims), era: 0 })))));

console.log(`\nmolting-node --dev, block every ${BLOCK_MS} ms, ${N} of each call, node: ${process.env.MOLTING_NODE_BIN ?? 'debug build'}\n`);
console.log('| call | fit in one block (by weight/length) | limited by | ref time (ps) | proof (bytes) | sustained /s | most in one block |');
console.log('| --- | ---: | --- | ---: | ---: | ---: | ---: |');
for (const [label, c] of capacity) {
  const r = results.find((x) => x.label === label);
  console.log(`| ${label} | ${c.fits} | ${c.limit} | ${c.refTime} | ${c.proofSize} | ${r.rate.toFixed(1)} | ${r.perBlockMax} |`);
}

await api.disconnect();
await node.stop();
process.exit(0);
