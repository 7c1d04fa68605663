// The worker's GGUF LoRA, loaded by llama.cpp itself (node-llama-cpp's prebuilt CPU build:
// no compiler, no download at run time).
//
// A short persona job is trained with the real `molt-worker` (12 steps of
// worker/jobs/keeper.toml), then on the held-out persona conversations:
//   - llama.cpp's assistant-token loss, with and without the worker's adapter.gguf, is the
//     worker's own eval (its PEFT adapter) within LOSS_REL_TOL. llama.cpp multiplies the
//     Q4_1 weights by activations it quantises to 8 bits (the worker dequantises the same
//     weights to f32), so the two agree closely but not to the last digit;
//   - the adapter lowers llama.cpp's loss, as it lowers the worker's;
//   - a greedy reply with the adapter starts with the same GREEDY_EXACT tokens in both,
//     and every token of the worker's reply is (near) llama.cpp's own top choice.
// Token ids and masks come from the worker (`eval --json --conversations`); llama.cpp
// scores each conversation alone from position 0, nothing prepended.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD ??= "true"; // read when node-llama-cpp is imported
const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");

const LOSS_REL_TOL = 0.01;
// Greedy replies: the first GREEDY_EXACT tokens identical; over the first GREEDY_TOKENS of
// the worker's reply, each token (fed to llama.cpp as context) within GREEDY_GAP nats of
// llama.cpp's own top choice there (a near-tie may flip under 8-bit activations).
const GREEDY_EXACT = 4;
const GREEDY_TOKENS = 12;
const GREEDY_GAP = 0.25;
const PROMPTS = ["How do I keep my houseplants alive?", "What's a good way to learn a new language?"];

const REPO = path.resolve(import.meta.dirname, "../..");
const TARGET = process.env.CARGO_TARGET_DIR ?? path.join(os.homedir(), ".cache/molting/target");
const WORKER = process.env.MOLTING_WORKER_BIN ?? path.join(TARGET, "debug/molt-worker");
const MODELS = process.env.MOLTING_MODELS ?? path.join(os.homedir(), ".cache/molting/models");
const MODEL = path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf");
const THREADS = Math.min(os.availableParallelism(), 2);

let dir, run, spec, llama, model;

function worker(...args) {
	return execFileSync(WORKER, ["--threads", String(THREADS), ...args], {
		encoding: "utf8",
		maxBuffer: 1 << 28,
		stdio: ["ignore", "pipe", "inherit"],
	});
}

before(async () => {
	for (const p of [WORKER, MODEL]) assert.ok(fs.existsSync(p), `${p} is missing (scripts/test.sh builds and fetches it)`);
	dir = fs.mkdtempSync(path.join(os.tmpdir(), "molting-llamacpp-"));
	// The demo job, shortened, with its data named by absolute path from here.
	const jobs = path.join(REPO, "worker/jobs");
	spec = path.join(dir, "job.toml");
	const text = fs
		.readFileSync(path.join(jobs, "keeper.toml"), "utf8")
		.replace(/^steps = \d+$/m, "steps = 12")
		.replace(/^checkpoint_every = \d+$/m, "checkpoint_every = 12")
		.replace(/"\.\.\/data\//g, `"${path.join(REPO, "worker/data")}/`);
	assert.match(text, /steps = 12/);
	fs.writeFileSync(spec, text);
	run = path.join(dir, "run");
	worker("train", "--spec", spec, "--out", run);
	llama = await getLlama({
		gpu: false,
		build: "never",
		skipDownload: true,
		usePrebuiltBinaries: true,
		progressLogs: false,
		maxThreads: THREADS,
		logLevel: LlamaLogLevel.error,
		logger: (level, message) => process.stderr.write(`[llama.cpp ${level}] ${message}\n`),
	});
	model = await llama.loadModel({ modelPath: MODEL, gpuLayers: 0 });
});

after(async () => {
	await model?.dispose();
	await llama?.dispose();
	if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** A llama.cpp context (one sequence) with or without the worker's GGUF LoRA. */
async function context(lora, size) {
	return model.createContext({
		contextSize: size,
		batchSize: Math.min(512, size),
		sequences: 1,
		threads: { ideal: THREADS, min: THREADS },
		...(lora ? { lora: { adapters: [{ filePath: lora, scale: 1 }] } } : {}),
	});
}

/** Summed −ln p of each conversation's masked tokens, each scored alone from position 0. */
async function score(ctx, conversations) {
	const seq = ctx.getSequence();
	const out = [];
	for (const c of conversations) {
		await seq.clearHistory();
		const { ids, mask } = c;
		// At each position before a masked token: that token's raw logit, the argmax's (the
		// largest) and Σ exp(logit − max) over the whole vocabulary.
		const feed = ids.slice(0, -1).map((t, i) =>
			mask[i + 1] === 1
				? [t, { generateNext: { logits: { filter: { tokens: [ids[i + 1]], includeSelected: true } }, totalLogitWeight: true, token: true } }]
				: t,
		);
		const res = await seq.controlledEvaluate(feed);
		let sum = 0;
		let n = 0;
		for (let i = 0; i < feed.length; i++) {
			if (mask[i + 1] !== 1) continue;
			const next = res[i].next;
			sum -= next.logits.get(ids[i + 1]) - next.logits.get(next.token) - Math.log(next.totalLogitWeight);
			n++;
		}
		out.push({ sum, n });
	}
	seq.dispose();
	return out;
}

test("llama.cpp scores the held-out conversations as the worker does, and the adapter lowers the loss", async (t) => {
	const evalOut = JSON.parse(worker("eval", "--spec", spec, "--adapter", path.join(run, "adapter"), "--json", "--conversations"));
	const convs = evalOut.conversations;
	assert.equal(convs.length, 40);
	const size = Math.max(...convs.map((c) => c.ids.length)) + 8;
	const report = {};
	for (const [name, lora] of [["base", null], ["adapter", path.join(run, "adapter.gguf")]]) {
		const ctx = await context(lora, size);
		const scores = await score(ctx, convs);
		await ctx.dispose();
		const tokens = scores.reduce((a, s) => a + s.n, 0);
		assert.equal(tokens, evalOut[name].tokens, `${name}: the same tokens are scored`);
		const loss = scores.reduce((a, s) => a + s.sum, 0) / tokens;
		const rel = Math.abs(loss - evalOut[name].loss) / evalOut[name].loss;
		report[name] = { llama: loss, worker: evalOut[name].loss, rel };
		assert.ok(rel < LOSS_REL_TOL, `${name}: llama.cpp ${loss} vs worker ${evalOut[name].loss} (relative ${rel})`);
	}
	t.diagnostic(JSON.stringify(report));
	assert.ok(evalOut.adapter.loss < evalOut.base.loss, "the worker's adapter lowers its eval loss");
	assert.ok(report.adapter.llama < report.base.llama - 0.05, "and llama.cpp's, with the GGUF LoRA");
});

test("a greedy reply with the adapter starts the same in llama.cpp and the worker", async (t) => {
	const ctx = await context(path.join(run, "adapter.gguf"), 512);
	const seq = ctx.getSequence();
	for (const prompt of PROMPTS) {
		const mine = JSON.parse(
			worker("chat", "--adapter", path.join(run, "adapter"), "--json", "--max-tokens", String(GREEDY_TOKENS), "--prompt", prompt),
		);
		assert.ok(mine.reply_ids.length >= GREEDY_EXACT, `${prompt}: the worker replied`);
		await seq.clearHistory();
		const theirs = [];
		for await (const tok of seq.evaluate(mine.prompt_ids, { temperature: 0, yieldEogToken: true })) {
			theirs.push(tok);
			if (theirs.length >= GREEDY_EXACT || model.isEogToken(tok)) break;
		}
		assert.deepEqual(theirs, mine.reply_ids.slice(0, GREEDY_EXACT), `${prompt}: llama.cpp "${model.detokenize(theirs)}" vs worker "${mine.reply}"`);
		// The worker's whole reply as llama.cpp's context: how far is each of its tokens
		// from llama.cpp's own top choice at that point?
		await seq.clearHistory();
		const ids = [...mine.prompt_ids, ...mine.reply_ids];
		const first = mine.prompt_ids.length - 1;
		const feed = ids.slice(0, -1).map((tok, i) =>
			i >= first ? [tok, { generateNext: { logits: { filter: { tokens: [ids[i + 1]], includeSelected: true } }, token: true } }] : tok,
		);
		const res = await seq.controlledEvaluate(feed);
		let worst = 0;
		for (let i = first; i < feed.length; i++) {
			const next = res[i].next;
			worst = Math.max(worst, next.logits.get(next.token) - next.logits.get(ids[i + 1]));
		}
		t.diagnostic(`${prompt} -> "${mine.reply}": largest gap to llama.cpp's top token ${worst.toFixed(3)} nats`);
		assert.ok(worst <= GREEDY_GAP, `${prompt}: a worker token ${worst} nats below llama.cpp's choice`);
	}
	seq.dispose();
	await ctx.dispose();
});
