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
        del k_full, v_full


if __name__ == "__main__":
    main()
