#!/usr/bin/env node
// Posts a fine-tuning job to a Molting chain with @polkadot/api alone (no custom types:
// everything comes from the chain's metadata), the way a developer's app would, and
// follows it until a result is delivered and judged.
//
//   node examples/js/post-job.mjs --node ws://127.0.0.1:9944 --account //Alice \
//     --recipe-sha256 <hex> --recipe-uri http://127.0.0.1:8700/blobs/<hex> \
//     --steps 60 --checkpoint-interval 10 --budget 100 [--replication 1] \
//     [--claim-blocks 100] [--submit-blocks 1000] [--reveal-blocks 10] [--judge-blocks 20] \
//     [--eval-commitment <hex>] [--min-improvement-pct 1] \
//     [--wait-result] [--wait-settled] [--timeout-s 1800]
//
// Without --eval-commitment the results are judged on replay alone (no hidden eval set);
// `molt-worker job post --eval FILE` commits to one and keeps its salt for `job reveal`.
//
// The recipe (its hash and where to fetch it) comes from `molt-worker recipe job.toml
// --store URL --json`, which also uploads the inputs. Prints one JSON line per event of
// interest ({"event": "posted", "jobId": ...}, {"event": "submitted", ...}, ...).
import { ApiPromise, WsProvider } from '@polkadot/api';
import { Keyring } from '@polkadot/keyring';
import { cryptoWaitReady } from '@polkadot/util-crypto';
import { parseArgs } from 'node:util';

const MOLT = 10n ** 12n;

/** MOLT as a decimal string ("100", "0.5") to planck. */
export function molt(s) {
  const [whole, frac = ''] = String(s).split('.');
  if (frac.length > 12 || !/^\d*$/.test(whole) || !/^\d*$/.test(frac)) throw new Error(`not an amount of MOLT: ${s}`);
  return BigInt(whole || '0') * MOLT + BigInt((frac + '0'.repeat(12)).slice(0, 12));
}

/** Signs and sends `tx`; resolves once it is finalised with its events, rejects with the pallet error's name. */
export function send(api, tx, signer) {
  return new Promise((ok, fail) => {
    tx.signAndSend(signer, ({ status, events, dispatchError }) => {
      if (!status.isFinalized) return;
      if (dispatchError) {
        if (dispatchError.isModule) {
          const { section, name } = api.registry.findMetaError(dispatchError.asModule);
          fail(new Error(`${section}.${name}`));
        } else {
          fail(new Error(dispatchError.toString()));
        }
        return;
      }
      ok({ blockHash: status.asFinalized, events: events.map(({ event }) => event) });
    }).catch(fail);
  });
}

/** Posts the job; resolves with its id. */
export async function postJob(api, owner, o) {
  const head = (await api.rpc.chain.getHeader(await api.rpc.chain.getFinalizedHead())).number.toNumber();
  const spec = {
    work: { Compute: { recipe: { sha256: '0x' + o.recipeSha256, uri: o.recipeUri }, steps: o.steps, checkpointInterval: o.checkpointInterval } },
    evalCommitment: o.evalCommitment ? '0x' + o.evalCommitment : new Uint8Array(32),
    // Perbill: parts per billion.
    minImprovement: Math.round((o.minImprovementPct ?? 1) * 1e7),
    payout: 'Equal',
    requirements: { backend: o.backend ?? null, minMemoryMib: 0, minCompletedJobs: 0 },
    replication: o.replication ?? 1,
  };
  const claimBy = head + o.claimBlocks;
  const submitBy = claimBy + o.submitBlocks;
  const revealBy = submitBy + (o.revealBlocks ?? 10);
  const deadlines = { claimBy, submitBy, revealBy, judgeBy: revealBy + (o.judgeBlocks ?? 20) };
  const { events } = await send(api, api.tx.jobs.postJob(spec, o.budget, deadlines), owner);
  const posted = events.find((e) => api.events.jobs.JobPosted.is(e));
  return { jobId: posted.data.jobId.toNumber(), deadlines };
}

/** Resolves with the first event of `jobId` that `pick` turns into a value, in a finalised block; rejects after `timeoutS`. */
function waitForEvent(api, jobId, what, timeoutS, pick) {
  return new Promise((ok, fail) => {
    setTimeout(() => fail(new Error(`no ${what} for job ${jobId} within ${timeoutS} s`)), timeoutS * 1000).unref();
    let unsubscribe = null;
    api.rpc.chain.subscribeFinalizedHeads(async (header) => {
      try {
        const at = await api.at(header.hash);
        const found = [];
        for (const { event } of await at.query.system.events()) {
          if (event.data.jobId?.toNumber?.() === jobId) {
            const v = pick(event, header.number.toNumber());
            if (v) found.push(v);
          }
        }
        if (found.length) {
          if (unsubscribe) unsubscribe();
          ok(found);
        }
      } catch (e) { fail(e); }
    }).then((u) => { unsubscribe = u; }).catch(fail);
  });
}

/** The first ResultSubmitted of `jobId`. */
export async function waitForResult(api, jobId, timeoutS = 1800) {
  const [r] = await waitForEvent(api, jobId, 'result', timeoutS, (e, block) => api.events.jobs.ResultSubmitted.is(e) &&
    { miner: e.data.miner.toString(), resultSha256: e.data.resultSha256.toHex(), block });
  return r;
}

/** The ResultSettled events of `jobId` (the validators' committee ruled, or nobody could). */
export function waitForSettled(api, jobId, timeoutS = 1800) {
  return waitForEvent(api, jobId, 'settlement', timeoutS, (e, block) => api.events.jobs.ResultSettled.is(e) && {
    miner: e.data.miner.toString(),
    grade: e.data.grade.type,
    paid: e.data.paid.toString(),
    fee: e.data.fee.toString(),
    validatorFee: e.data.validatorFee.toString(),
    refunded: e.data.refunded.toString(),
    slashed: e.data.slashed.toString(),
    block,
  });
}

async function main() {
  const { values: a } = parseArgs({
    options: {
      node: { type: 'string', default: 'ws://127.0.0.1:9944' },
      account: { type: 'string', default: '//Alice' },
      'recipe-sha256': { type: 'string' },
      'recipe-uri': { type: 'string' },
      steps: { type: 'string' },
      'checkpoint-interval': { type: 'string' },
      budget: { type: 'string' },
      replication: { type: 'string', default: '1' },
      'claim-blocks': { type: 'string', default: '100' },
      'submit-blocks': { type: 'string', default: '1000' },
      'reveal-blocks': { type: 'string', default: '10' },
      'judge-blocks': { type: 'string', default: '20' },
      'eval-commitment': { type: 'string' },
      'min-improvement-pct': { type: 'string', default: '1' },
      backend: { type: 'string' },
      'wait-result': { type: 'boolean', default: false },
      'wait-settled': { type: 'boolean', default: false },
      'timeout-s': { type: 'string', default: '1800' },
    },
  });
  for (const k of ['recipe-sha256', 'recipe-uri', 'steps', 'checkpoint-interval', 'budget']) {
    if (a[k] === undefined) throw new Error(`--${k} is required`);
  }
  await cryptoWaitReady();
  const api = await ApiPromise.create({ provider: new WsProvider(a.node), noInitWarn: true });
  try {
    const owner = new Keyring({ type: 'sr25519' }).addFromUri(a.account);
    const { jobId, deadlines } = await postJob(api, owner, {
      recipeSha256: a['recipe-sha256'].replace(/^0x/, ''),
      recipeUri: a['recipe-uri'],
      steps: Number(a.steps),
      checkpointInterval: Number(a['checkpoint-interval']),
      budget: molt(a.budget),
      replication: Number(a.replication),
      claimBlocks: Number(a['claim-blocks']),
      submitBlocks: Number(a['submit-blocks']),
      revealBlocks: Number(a['reveal-blocks']),
      judgeBlocks: Number(a['judge-blocks']),
      evalCommitment: a['eval-commitment']?.replace(/^0x/, ''),
      minImprovementPct: Number(a['min-improvement-pct']),
      backend: a.backend,
    });
    console.log(JSON.stringify({ event: 'posted', jobId, owner: owner.address, ...deadlines }));
    if (a['wait-result'] || a['wait-settled']) {
      const r = await waitForResult(api, jobId, Number(a['timeout-s']));
      console.log(JSON.stringify({ event: 'submitted', jobId, ...r }));
    }
    if (a['wait-settled']) {
      for (const s of await waitForSettled(api, jobId, Number(a['timeout-s']))) {
        console.log(JSON.stringify({ event: 'settled', jobId, ...s }));
      }
    }
  } finally {
    await api.disconnect();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => { console.error(`post-job: ${e.message}`); process.exit(1); });
}
