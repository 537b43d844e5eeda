"""Expected sampled ids for tests/tt_sampling.rs, from Hugging Face's logits.

    python sampling_reference.py FIXTURE_DIR STEPS TEMPERATURE TOP_K TOP_P SEED

Reads `decode_logits` (the logits transformers computed at each step of its greedy generation,
in reference.safetensors) and, at each of the first STEPS steps, samples the way Hugging Face's
logits processors order it, over the whole vocabulary: temperature, top-k (ties at the boundary
to the lower id), top-p (the smallest most-likely prefix whose probability reaches TOP_P), then
one draw. The draw is the generated program's documented protocol (model.py `Sampler`): u from a
torch generator seeded with SEED, scaled by the kept weights' sum, and the first candidate, most
likely first, whose cumulative weight exceeds it. Prints the ids space-separated.

Independent of the generated program: the logits are transformers', and the filters run on the
full float64 vocabulary instead of the device's 32 or 64 candidates.
"""

import json
import struct
import sys

import numpy as np
import torch


def read_tensor(path, name):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        info = header[name]
        begin, end = info["data_offsets"]
        f.seek(8 + n + begin)
        dtype = {"F32": "<f4", "I64": "<i8"}[info["dtype"]]
        return np.frombuffer(f.read(end - begin), dtype=dtype).reshape(info["shape"])


def main(fixture, steps, temperature, top_k, top_p, seed):
    logits = torch.from_numpy(read_tensor(f"{fixture}/reference.safetensors", "decode_logits").astype(np.float64))
    gen = torch.Generator().manual_seed(seed)
    out = []
    for row in logits[:steps]:
        scaled = row / temperature
        # Most likely first; a stable sort keeps equal logits in id order.
        order = torch.sort(scaled, descending=True, stable=True).indices[:top_k]
        weights = torch.exp(scaled[order] - scaled[order[0]])
        probs = weights / weights.sum()
        cumulative = torch.cumsum(probs, 0)
        keep = int((cumulative < top_p).sum()) + 1 if top_p < 1 else len(order)
        kept = weights[:keep]
        u = float(torch.rand((), generator=gen, dtype=torch.float64)) * float(kept.sum())
        acc = 0.0
        pick = int(order[keep - 1])
        for w, i in zip(kept.tolist(), order[:keep].tolist()):
            acc += w
            if u < acc:
                pick = i
                break
        out.append(pick)
    print(" ".join(str(i) for i in out))


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), float(a[2]), int(a[3]), float(a[4]), int(a[5]))
