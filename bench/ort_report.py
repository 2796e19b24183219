#!/usr/bin/python3
"""The table of bench/vs_onnxruntime.sh from its results.jsonl (markdown on
stdout): per engine and kernel the median images/s over the rounds, and the
paired ratios, i.e. the median over rounds of (magiclens rate / the same
round's ORT fp32 rate) and (/ ORT int8 rate); then the accuracy rows."""
import json
import statistics
import sys


def main(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    by = {}
    for r in rows:
        by.setdefault(r.get('key'), []).append(r)
    mach = (by.get('machine') or [{}])[0]
    end = (by.get('end') or [{}])[0]
    print('# magiclens vs ONNX Runtime %s\n' % ((by.get('ort_fp32') or [{}])[0].get('version', '?')))
    if mach.get('emulate'):
        print('**Emulated %s CPU**: every engine ran with bench/cpuid_mask.c preloaded, so CPUID '
              'hid AVX-512%s from ONNX Runtime, PyTorch and magiclens alike (a stand-in: the cores, '
              'caches and clocks are this CPU\'s).\n' % (
                  'AVX2 + AVX-VNNI' if mach['emulate'] == 'avx2' else 'AVX2-only',
                  '' if mach['emulate'] == 'avx2' else ' and AVX-VNNI'))
    print('CPU: %s (%s CPUs; %s). Load at start %s, at end %s. magiclens %s. Batch %s, %s threads, '
          '%s s a run, %s rounds; wall %s s.\n' % (
              mach.get('cpu'), mach.get('nproc'), mach.get('flags'), mach.get('load_start'),
              end.get('load_end'), mach.get('git'), mach.get('batch'), mach.get('threads'),
              mach.get('seconds'), mach.get('rounds'), end.get('wall_s')))
    ort = {k: {r['round']: r['images_per_s'] for r in by.get(k, [])} for k in ('ort_fp32', 'ort_int8')}
    print('| engine | kernel | images/s (median) | runs | x ORT fp32 (paired) | x ORT int8 (paired) |')
    print('|---|---|---:|---:|---:|---:|')
    keys = ['ort_fp32', 'ort_int8', 'torch_fp32'] + sorted(k for k in by if k and k.startswith('c_'))
    for k in keys:
        rs = by.get(k, [])
        if not rs:
            continue
        rate = statistics.median(r['images_per_s'] for r in rs)
        ratios = []
        for ok in ('ort_fp32', 'ort_int8'):
            rr = [r['images_per_s'] / ort[ok][r['round']] for r in rs if ort[ok].get(r['round'])]
            ratios.append('%.2fx' % statistics.median(rr) if rr else '-')
        if k.startswith('ort'):
            name, kernel = 'ONNX Runtime ' + k[4:], 'MLAS (CPU EP, optimisation all)'
        elif k == 'torch_fp32':
            libs = rs[0].get('libs') or []
            name = 'PyTorch %s fp32' % rs[0].get('torch', '')
            ob = [l.rsplit('/', 1)[-1] for l in libs if 'libopenblas' in l]
            kernel = ('OpenBLAS ' + ob[0].replace('libopenblasp-', '').replace('.so', '') if ob
                      else 'netlib reference BLAS' if any('/blas/' in l for l in libs) else '?')
            if rs[0].get('openblas_coretype'):
                kernel += ' (OPENBLAS_CORETYPE=%s)' % rs[0]['openblas_coretype']
        else:
            name = 'magiclens ' + k[2:].replace('_', ' ')
            kernel = rs[0].get('gemm', '?')
        print('| %s | %s | %.2f | %d | %s | %s |' % (name, kernel, rate, len(rs), ratios[0], ratios[1]))
    print()
    acc = [(k, v[0]) for k, v in by.items() if k and (k.startswith('acc_') or k.startswith('overlap_'))]
    if acc or any('cos_worst' in r for r in by.get('ort_int8', [])):
        print('| accuracy | worst cosine to float64 | mean | top-10 overlap with fp32 (mean / min) |')
        print('|---|---:|---:|---:|')
        for r in by.get('ort_int8', []):
            if 'cos_worst' in r:
                print('| ONNX Runtime int8 vs ORT fp32 (timed batch) | %.6f | %.6f | - |' % (r['cos_worst'], r['cos_mean']))
        for k, v in sorted(acc):
            if k.startswith('acc_') and 'error' in v:
                print('| magiclens %s | %s | - | - |' % (k[6:].replace('_', ' '), v['error']))
            elif k.startswith('acc_'):
                name = k[4:]
                ov = by.get('overlap_' + name, [{}])[0]
                o = '%.3f / %.2f' % (ov['mean_overlap'], ov['min_overlap']) if 'mean_overlap' in ov else '-'
                print('| magiclens %s | %.6f | %.6f | %s |' % (name[2:].replace('_', ' '), v['worst_cos'], v['mean_cos'], o))
            elif not by.get('acc_' + k[8:]):
                print('| magiclens %s | - | - | %.3f / %.2f |' % (k[10:].replace('_', ' '), v['mean_overlap'], v['min_overlap']))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
