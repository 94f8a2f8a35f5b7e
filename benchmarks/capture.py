"""Capture throughput: fill_buffer against the plain forward, run_with_cache + copy, and SAELens.

Every method runs over the same token batches with the same ``stop_at_layer``; rounds are
interleaved (A B C A B C ...) so drift in a shared machine's load hits every method alike, and the
ratios printed come from this one run. Not a test: nothing here asserts a speed.

    .venv/bin/python benchmarks/capture.py --batches 12 --rounds 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date

import torch

from tl_diffusion_prior.capture import (
    ActivationRingBuffer,
    fill_buffer,
    model_device,
    stop_at_layer,
)
from tl_diffusion_prior.constants import DEFAULT_HOOK
from tl_diffusion_prior.data import corpus_token_source, load_model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_forward(model, batches, hook):
    with torch.inference_mode():
        for tokens in batches:
            model(tokens, stop_at_layer=stop_at_layer([hook]))


def ours(model, batches, hook):
    n_rows = sum(b.shape[0] * (b.shape[1] - 1) for b in batches)
    buffer = ActivationRingBuffer(n_rows, model.cfg.d_model, [hook], device=model_device(model))
    fill_buffer(model, batches, hook, n_rows, buffer=buffer, progress=False)


def run_with_cache_copy(model, batches, hook):
    n_rows = sum(b.shape[0] * (b.shape[1] - 1) for b in batches)
    store = torch.empty(n_rows, model.cfg.d_model, device=model_device(model))
    offset = 0
    with torch.inference_mode():
        for tokens in batches:
            _, cache = model.run_with_cache(
                tokens, names_filter=[hook], stop_at_layer=stop_at_layer([hook])
            )
            rows = cache[hook][:, 1:].reshape(-1, model.cfg.d_model)
            store[offset : offset + rows.shape[0]] = rows
            offset += rows.shape[0]


def saelens_store(model, batches, hook):
    """SAELens's ActivationsStore over the same tokens, served through its training iterator."""
    from datasets import Dataset
    from sae_lens import ActivationsStore

    ctx = batches[0].shape[1]
    dataset = Dataset.from_dict({"input_ids": [row.tolist() for b in batches for row in b]})
    store = ActivationsStore.from_config(
        model,
        _saelens_config(hook, ctx, batches[0].shape[0], model.cfg.d_model),
        override_dataset=dataset,
    )
    n_rows = sum(b.shape[0] * (b.shape[1] - 1) for b in batches)
    served = 0
    iterator = iter(store)
    with torch.inference_mode():
        while served < n_rows:
            served += next(iterator).shape[0]


def _saelens_config(hook, ctx, batch, d_model):
    from sae_lens import LanguageModelSAERunnerConfig
    from sae_lens.saes import StandardTrainingSAEConfig

    return LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=d_model, d_sae=d_model),
        model_name="SmolLM2-135M-Instruct",
        hook_name=hook,
        dataset_path="local",
        is_dataset_tokenized=True,
        context_size=ctx,
        store_batch_size_prompts=batch,
        n_batches_in_buffer=8,
        train_batch_size_tokens=1024,
        prepend_bos=True,
        device="cpu",
        logger=None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=12, help="token batches per round")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ctx", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hook", default=DEFAULT_HOOK)
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-saelens", action="store_true")
    args = parser.parse_args()

    model = load_model(None, device=args.device)
    device = model_device(model)
    source = corpus_token_source(model.tokenizer, batch_size=args.batch_size, ctx=args.ctx)
    batches = [b.to(device) for _, b in zip(range(args.batches), source, strict=False)]
    n_tokens = sum(b.numel() for b in batches)

    methods = {"plain forward": plain_forward, "fill_buffer (ours)": ours}
    methods["run_with_cache + copy"] = run_with_cache_copy
    if not args.no_saelens:
        try:
            import sae_lens  # noqa: F401

            methods["SAELens ActivationsStore"] = saelens_store
        except ImportError:
            print("sae-lens not installed (pip install -e '.[bench]'); skipping its store.")

    plain_forward(model, batches[:1], args.hook)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            synchronize(device)
            start = time.perf_counter()
            fn(model, batches, args.hook)
            synchronize(device)
            times[name].append(time.perf_counter() - start)

    base = statistics.median(times["plain forward"])
    print(
        f"\n{date.today()} | {platform.processor() or platform.machine()} | device {device} | "
        f"torch threads {torch.get_num_threads()} | {n_tokens:,} tokens x {args.rounds} rounds"
    )
    print(f"{'method':28s} {'tok/s':>9s} {'x plain':>8s}")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"{name:28s} {n_tokens / median:9,.0f} {base / median:8.3f}")
    if "SAELens ActivationsStore" in times:
        ratio = statistics.median(times["SAELens ActivationsStore"]) / statistics.median(
            times["fill_buffer (ours)"]
        )
        print(f"ours vs SAELens store: {ratio:.3f}x its throughput")


if __name__ == "__main__":
    main()
