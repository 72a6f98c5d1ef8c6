"""Decode attention alone, on the GPU: the matrix-product attention over a 256-token length bucket (reads every
row's K/V up to the bucket) against the split Triton kernel (reads only each row's valid K/V), Llama-2-7B head shape
(32 heads of 128), one layer. Prints microseconds per call and the bandwidth each reaches on the K/V it must read.

    python benchmarks/decode_attention.py      # on the GPU host
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from model import fused

    dev, h, d, max_len = "cuda", 32, 128, 1280
    rng = random.Random(0)
    print(f"| batch | bucket | mean valid length | matmul us | Triton us | Triton GB/s (valid K/V) | "
          f"matmul GB/s (bucket K/V) | speed-up | ({torch.cuda.get_device_name()}) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for b, lens in ((1, [783]), (8, [rng.randint(238, 1264) for _ in range(8)]),
                    (64, [rng.randint(238, 1264) for _ in range(64)]), (64, [rng.randint(200, 456) for _ in range(64)])):
        bucket = -(-max(lens) // 256) * 256
        k_full = torch.randn(b, h, max_len, d, device=dev, dtype=torch.bfloat16)
        v_full = torch.randn(b, h, max_len, d, device=dev, dtype=torch.bfloat16)
        k, v = k_full[:, :, :bucket], v_full[:, :, :bucket]
        q = torch.randn(b, h, 1, d, device=dev, dtype=torch.bfloat16)
        lens_t = torch.tensor(lens, device=dev, dtype=torch.int32)
        mask = (torch.arange(bucket, device=dev)[None] < lens_t[:, None]).view(b, 1, 1, bucket)
        ref, _ = fused.slot_attention(None, q, k, v, mask, scaling=d ** -0.5)
        got = fused.triton_decode_attention(q, k, v, lens_t, d ** -0.5)  # autotunes this shape once
        err = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
        assert err < 2e-2, err

        def timed(fn, reps=200):
            for _ in range(10):
                fn()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) * 1000 / reps

        t_mm = timed(lambda: fused.slot_attention(None, q, k, v, mask, scaling=d ** -0.5))
        t_tr = timed(lambda: fused.triton_decode_attention(q, k, v, lens_t, d ** -0.5))
        valid = sum(lens) * h * d * 2 * 2
        full = b * bucket * h * d * 2 * 2
        print(f"| {b} | {bucket} | {sum(lens) / b:.0f} | {t_mm:.1f} | {t_tr:.1f} | {valid / t_tr / 1e3:.0f} | "
              f"{full / t_mm / 1e3:.0f} | {t_mm / t_tr:.2f}x | |")
        if b == 64 and bucket == 1280:
            sweep(q, k, v, lens_t, timed, sum(lens) * h * d * 2 * 2)
        del k_full, v_full


def sweep(q, k, v, lens_t, timed, valid_bytes: int) -> None:
    """The split kernel at fixed settings (no autotuning): context chunk per program x (BLOCK_N, warps, stages),
    bf16 and fp8 K/V, for one batch-64 case; the autotuned choice is whatever `triton_decode_attention` picked."""
    import torch

    from model import fused

    split_attn, merge = fused._triton_kernels
    kernel = split_attn.fn  # the jitted function under the autotuner
    b, h, _, d = q.shape
    length = k.shape[2]
    print(f"\n| chunk | BLOCK_N | warps | stages | bf16 us | bf16 GB/s | fp8 us | fp8 GB/s |  (batch {b}, bucket {length})")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    k8, v8 = k.to(torch.float8_e4m3fn), v.to(torch.float8_e4m3fn)
    for chunk in (256, 512):
        s = -(-length // chunk)
        mid_o = torch.empty((b, h, s, d), dtype=torch.float32, device=q.device)
        mid_l = torch.empty((b, h, s), dtype=torch.float32, device=q.device)
        out = torch.empty((b, 1, h, d), dtype=q.dtype, device=q.device)
        for bn, w, st in ((32, 2, 2), (64, 4, 2), (64, 4, 3), (128, 4, 2), (128, 8, 2), (64, 2, 3), (128, 4, 3),
                          (128, 8, 3), (64, 4, 4), (256, 8, 2), (32, 4, 4)):
            if bn > chunk:
                continue

            def run(kk, vv):
                kernel[(b, h, s)](q, kk, vv, lens_t, mid_o, mid_l, d ** -0.5, q.stride(0), q.stride(1),
                                  kk.stride(0), kk.stride(1), kk.stride(2), vv.stride(0), vv.stride(1),
                                  vv.stride(2), h, s, GROUP=h // kk.shape[1], CHUNK=chunk, D=d, BLOCK_N=bn,
                                  num_warps=w, num_stages=st)
                merge[(b, h)](mid_o, mid_l, out, out.stride(0), out.stride(2), h, s,
                              SP=max(2, fused.triton_next_pow2(s)), D=d, num_warps=4)
            try:
                t16 = timed(lambda: run(k, v))
                t8 = timed(lambda: run(k8, v8))
            except Exception as e:  # noqa: BLE001 - a config that does not compile is a result too
                print(f"| {chunk} | {bn} | {w} | {st} | {type(e).__name__} | | | |")
                continue
            print(f"| {chunk} | {bn} | {w} | {st} | {t16:.1f} | {valid_bytes / t16 / 1e3:.0f} | {t8:.1f} | "
                  f"{valid_bytes / 2 / t8 / 1e3:.0f} |")


if __name__ == "__main__":
    main()
