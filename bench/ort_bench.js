// ort_bench.js - images per second of an ONNX model of the MagicLens image
// path (bench/ort_export.py) under ONNX Runtime's CPU execution provider
// (onnxruntime-node), for bench/vs_onnxruntime.sh.
//
//   node bench/ort_bench.js MODEL.onnx [--threads N] [--seconds S] [--batch B]
//        [--image-size S] [--compare OTHER.onnx]
//
// Graph optimisation 'all', N intra-op threads, one inter-op thread,
// sequential execution.  One warm-up run, then batches for S seconds.
// Prints one JSON line; with --compare, also the worst and mean cosine
// between this model's embeddings and OTHER's on the same random pixels
// (int8 against fp32).  ORT_NODE_DIR: where onnxruntime-node is installed
// (default bench/.ort/node_modules).
'use strict';
const path = require('path');
const ortDir = process.env.ORT_NODE_DIR || path.join(__dirname, '.ort', 'node_modules');
const ort = require(path.join(ortDir, 'onnxruntime-node'));

function parse(argv) {
    const o = {threads: 2, seconds: 20, batch: 8, size: 224, model: null, compare: null};
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i], v = argv[i + 1];
        if (a === '--threads') o.threads = +v, i++;
        else if (a === '--seconds') o.seconds = +v, i++;
        else if (a === '--batch') o.batch = +v, i++;
        else if (a === '--image-size') o.size = +v, i++;
        else if (a === '--compare') o.compare = v, i++;
        else if (!o.model) o.model = a;
        else throw new Error('ort_bench.js: unknown argument ' + a);
    }
    if (!o.model) throw new Error('usage: node bench/ort_bench.js MODEL.onnx [--threads N] [--seconds S]');
    return o;
}

async function session(file, threads) {
    return ort.InferenceSession.create(file, {
        executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: threads,
        interOpNumThreads: 1, executionMode: 'sequential'});
}

function pixels(batch, size) { // normalised-image-like values, fixed seed
    const n = batch * 3 * size * size, d = new Float32Array(n);
    let s = 12345;
    for (let i = 0; i < n; i++) {
        s = (s * 1103515245 + 12345) >>> 0;
        d[i] = (s / 4294967296) * 4 - 2;
    }
    return new ort.Tensor('float32', d, [batch, 3, size, size]);
}

function cosines(a, b, rows) {
    const d = a.length / rows;
    let worst = 1, sum = 0;
    for (let r = 0; r < rows; r++) {
        let ab = 0, aa = 0, bb = 0;
        for (let j = r * d; j < (r + 1) * d; j++) ab += a[j] * b[j], aa += a[j] * a[j], bb += b[j] * b[j];
        const c = ab / Math.sqrt(aa * bb);
        worst = Math.min(worst, c), sum += c;
    }
    return [worst, sum / rows];
}

async function main() {
    const o = parse(process.argv.slice(2));
    const s = await session(o.model, o.threads);
    const feeds = {[s.inputNames[0]]: pixels(o.batch, o.size)};
    const first = await s.run(feeds); // warm-up
    const out = {engine: 'onnxruntime-node', version: require(path.join(ortDir, 'onnxruntime-node', 'package.json')).version,
                 model: path.basename(o.model), threads: o.threads, batch: o.batch};
    const t0 = process.hrtime.bigint();
    let batches = 0, el = 0;
    do {
        await s.run(feeds);
        batches++;
        el = Number(process.hrtime.bigint() - t0) / 1e9;
    } while (el < o.seconds);
    out.images_per_s = +(batches * o.batch / el).toFixed(3);
    out.seconds = +el.toFixed(2);
    if (o.compare) {
        const c = await session(o.compare, o.threads);
        const other = await c.run({[c.inputNames[0]]: feeds[s.inputNames[0]]});
        const [worst, mean] = cosines(first[s.outputNames[0]].data, other[c.outputNames[0]].data, o.batch);
        out.cos_vs = path.basename(o.compare), out.cos_worst = +worst.toFixed(6), out.cos_mean = +mean.toFixed(6);
    }
    console.log(JSON.stringify(out));
}

main().catch(e => { console.error(String(e && e.stack || e)); process.exit(1); });
