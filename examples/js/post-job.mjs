#!/usr/bin/env node
// Posts a fine-tuning job to a Molting chain with @polkadot/api alone (no custom types:
// everything comes from the chain's metadata), the way a developer's app would, and
// follows it until a result is delivered.
//
//   node examples/js/post-job.mjs --node ws://127.0.0.1:9944 --account //Alice \
//     --recipe-sha256 <hex> --recipe-uri http://127.0.0.1:8700/blobs/<hex> \
//     --steps 60 --checkpoint-interval 10 --budget 100 [--replication 1] \
//     [--claim-blocks 100] [--submit-blocks 1000] [--wait-result [--timeout-s 1800]] [--accept]
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
    recipe: { sha256: '0x' + o.recipeSha256, uri: o.recipeUri },
    evalCommitment: new Uint8Array(32), // no hidden eval set yet
    steps: o.steps,
    checkpointInterval: o.checkpointInterval,
    requirements: { backend: o.backend ?? null, minMemoryMib: 0, minCompletedJobs: 0 },
    replication: o.replication ?? 1,
  };
  const deadlines = { claimBy: head + o.claimBlocks, submitBy: head + o.claimBlocks + o.submitBlocks };
  const { events } = await send(api, api.tx.jobs.postJob(spec, o.budget, deadlines), owner);
  const posted = events.find((e) => api.events.jobs.JobPosted.is(e));
  return { jobId: posted.data.jobId.toNumber(), deadlines };
}

/** Resolves with the first ResultSubmitted event of `jobId` in a finalised block; rejects after `timeoutS`. */
export function waitForResult(api, jobId, timeoutS = 1800) {
  return new Promise((ok, fail) => {
    setTimeout(() => fail(new Error(`no result for job ${jobId} within ${timeoutS} s`)), timeoutS * 1000).unref();
    api.rpc.chain.subscribeFinalizedHeads(async (header) => {
      try {
        const at = await api.at(header.hash);
        for (const { event } of await at.query.system.events()) {
          if (api.events.jobs.ResultSubmitted.is(event) && event.data.jobId.toNumber() === jobId) {
            ok({ miner: event.data.miner.toString(), resultSha256: event.data.resultSha256.toHex(), block: header.number.toNumber() });
          }
        }
      } catch (e) { fail(e); }
    }).catch(fail);
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
      backend: { type: 'string' },
      'wait-result': { type: 'boolean', default: false },
      'timeout-s': { type: 'string', default: '1800' },
      accept: { type: 'boolean', default: false },
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
      backend: a.backend,
    });
    console.log(JSON.stringify({ event: 'posted', jobId, owner: owner.address, ...deadlines }));
    if (a['wait-result'] || a.accept) {
      const r = await waitForResult(api, jobId, Number(a['timeout-s']));
      console.log(JSON.stringify({ event: 'submitted', jobId, ...r }));
      if (a.accept) {
        const { events } = await send(api, api.tx.jobs.acceptResult(jobId, r.miner), owner);
        const paid = events.find((e) => api.events.jobs.ResultAccepted.is(e));
        console.log(JSON.stringify({ event: 'accepted', jobId, miner: r.miner, paid: paid.data.paid.toString(), fee: paid.data.fee.toString() }));
      }
    }
  } finally {
    await api.disconnect();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => { console.error(`post-job: ${e.message}`); process.exit(1); });
}
