"""Generation speed with steering: plain, steered, and steered + prior at several step counts.

Two measurements on the default model, greedy, with the KV cache:

1. **Generation**: ``model.generate`` of ``--max-new-tokens`` tokens per mode (after one warm-up),
   reported as new tokens/s and the overhead against plain steering.
2. **Decode-step breakdown**: one cached single-token forward pass (the cache frozen after the
   prompt, so every repeat is the same step), timed ``--repeats`` times per mode with the modes
   interleaved, medians reported. Besides the modes above it runs a "hook path only" prior whose
   network is skipped (everything but the network evaluations: masks, noise, indexing, hook
   points, normalisation), and ``prior.denoise`` of the batch's rows alone. Interleaving makes
   this far steadier than (1) on a shared machine.

Not a test: nothing here asserts a speed.

    .venv/bin/python benchmarks/steer.py [--prior DIR|default] [--max-new-tokens 32] \
        [--steps 20 10 4] [--batch-size 1] [--prior-dtypes float32 bfloat16]

Without ``--prior`` a freshly initialised default-size MLPPrior is used (speed does not depend on
training). ``--batch-size`` generates that many copies of the prompt at once: the model's decode
step costs nearly the same for 1 or 16 rows on a CPU (it is bound by reading the weights), while
the prior's cost grows with the rows it denoises, so the overhead depends on the batch.
``--prior-dtypes`` times the prior with its weights in each dtype, in the same run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from datetime import date

import torch
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from tl_diffusion_prior.constants import DEFAULT_HOOK
from tl_diffusion_prior.data import load_model
from tl_diffusion_prior.data.models import resolve_dtype
from tl_diffusion_prior.priors import MLPPrior, MLPPriorConfig, load_prior, resolve_prior_dir
from tl_diffusion_prior.steering import mean_activation_norm, steer, steering_vector


class HookPathOnly(MLPPrior):
    """An MLPPrior whose denoising skips the network: times everything around it."""

    def _denoise_normalized(self, z, t_start, num_steps, noise):
        return self.add_noise(z, noise, t_start)


def generate_ms_per_token(model, tokens, n_new: int) -> float:
    start = time.perf_counter()
    model.generate(tokens, max_new_tokens=n_new, do_sample=False, stop_at_eos=False, verbose=False)
    return (time.perf_counter() - start) / n_new * 1000


def load_priors(args, model, device) -> tuple[dict, str, str]:
    """The prior in each of ``args.prior_dtypes`` (name -> prior), its hook, and its source."""
    priors = {}
    for name in args.prior_dtypes:
        dtype = resolve_dtype(name)
        if args.prior:
            priors[name] = load_prior(resolve_prior_dir(args.prior), device=device, dtype=dtype)
        else:
            config = MLPPriorConfig(
                d_model=model.cfg.d_model, hook_name=args.hook, model_name=model.cfg.model_name
            )
            torch.manual_seed(0)
            priors[name] = MLPPrior(config).to(device, dtype).eval()
    source = (
        args.prior or "fresh default-size MLPPrior (untrained; speed does not depend on training)"
    )
    return priors, next(iter(priors.values())).config.hook_name, source


def denoise_ms(prior, x, num_steps: int, repeats: int) -> float:
    noise = torch.randn_like(x)
    times = []
    with torch.inference_mode():
        prior.denoise(x, 0.5, num_steps, noise=noise)
        for _ in range(repeats):
            start = time.perf_counter()
            prior.denoise(x, 0.5, num_steps, noise=noise)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--prior", help="a saved prior or 'default' (default: fresh default-size MLPPrior)"
    )
    parser.add_argument("--hook", default=DEFAULT_HOOK)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 10, 4])
    parser.add_argument("--prompt", default="The best way to spend a quiet weekend is")
    parser.add_argument(
        "--scale", type=float, default=0.25, help="r: adds r * the prompt's mean activation norm"
    )
    parser.add_argument("--repeats", type=int, default=30, help="decode steps timed per mode")
    parser.add_argument("--batch-size", type=int, default=1, help="copies of the prompt at once")
    parser.add_argument(
        "--prior-dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"]
    )
    parser.add_argument("--threads", type=int, help="torch threads for this script")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(device=args.device)
    device = next(model.parameters()).device
    priors, hook, source = load_priors(args, model, device)
    prior = priors[args.prior_dtypes[0]]
    hook_only = HookPathOnly(MLPPriorConfig(**prior.config.to_dict())).to(device).eval()
    vector = steering_vector(
        model, hook, ["I love weddings, brides and flowers"], ["I file taxes and forms"]
    )
    tokens = model.to_tokens(args.prompt).repeat(args.batch_size, 1)
    n = args.max_new_tokens
    # Speed does not depend on the scale; a relative one keeps the steered text realistic.
    reference_norm = mean_activation_norm(model, hook, args.prompt)

    # (mode, prior, num_steps); prior None = plain steering, "off" = no steering at all.
    modes = [("plain generation", "off", 0), ("steered, no prior", None, 0)]
    modes += [
        (f"prior {name}", dtype_prior, steps)
        for name, dtype_prior in priors.items()
        for steps in args.steps
    ]

    def attached(mode_prior, steps):
        if mode_prior == "off":
            return _Nothing()
        return steer(
            model,
            hook,
            vector,
            args.scale,
            mode_prior,
            num_steps=steps or 20,
            seed=0,
            scale_mode="relative",
            reference_norm=reference_norm,
        )

    generate_ms_per_token(model, tokens, 2)  # warm-up
    generation = {}
    for mode, mode_prior, steps in modes:
        with attached(mode_prior, steps):
            generation[mode, steps] = generate_ms_per_token(model, tokens, n)

    step_modes = modes[:2] + [("hook path only", hook_only, 1)] + modes[2:]
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, args.batch_size)
    with torch.inference_mode():
        model(tokens, past_kv_cache=cache)
    cache.freeze()
    next_token = tokens[:, -1:]
    step_times: dict = {(mode, steps): [] for mode, _, steps in step_modes}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for mode, mode_prior, steps in step_modes:
                with attached(mode_prior, steps):
                    start = time.perf_counter()
                    model(next_token, past_kv_cache=cache)
                    step_times[mode, steps].append(time.perf_counter() - start)
    step_ms = {key: 1000 * statistics.median(v) for key, v in step_times.items()}
    x = torch.randn(args.batch_size, model.cfg.d_model, device=device)
    isolated = {
        (f"prior {name}", steps): denoise_ms(dtype_prior, x, steps, args.repeats)
        for name, dtype_prior in priors.items()
        for steps in args.steps
    }

    print(
        f"# {date.today()} {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}"
    )
    print(
        f"# model {model.cfg.model_name}, hook {hook}, prompt {tokens.shape[1]} tokens x batch "
        f"{args.batch_size}, greedy, KV cache; prior: {source}; "
        f"{prior.num_parameters / 1e6:.1f}M parameters; t_start 0.5"
    )
    steered = generation["steered, no prior", 0]
    print(f"\n## generation ({n} new tokens, one run per mode)")
    print(f"{'mode':<18} {'steps':>5} {'tok/s':>6} {'ms/tok':>7} {'vs steered':>10}")
    # tok/s counts every row's new token: batch x steps per second.
    for mode, _, steps in modes:
        ms = generation[mode, steps]
        print(
            f"{mode:<18} {steps or '-':>5} {args.batch_size * 1000 / ms:>6.2f} {ms:>7.1f} "
            f"{100 * (ms / steered - 1):>+9.0f}%"
        )
    steered = step_ms["steered, no prior", 0]
    print(f"\n## one cached decode step (median of {args.repeats}, modes interleaved)")
    print(f"{'mode':<18} {'steps':>5} {'ms':>7} {'vs steered':>10} {'denoise alone':>13}")
    for mode, _, steps in step_modes:
        ms = step_ms[mode, steps]
        alone = f"{isolated[mode, steps]:.1f}" if (mode, steps) in isolated else ""
        print(
            f"{mode:<18} {steps or '-':>5} {ms:>7.1f} {100 * (ms / steered - 1):>+9.0f}% "
            f"{alone:>13}"
        )
    print(
        f"# 'denoise alone': prior.denoise of {args.batch_size} row(s) from t_start 0.5 (an MLP "
        "prior evaluates its network once per step). 'hook path only' - 'steered' = the "
        "steering hook's own cost per token beyond the network."
    )


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


if __name__ == "__main__":
    main()
