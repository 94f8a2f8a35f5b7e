"""Read the text: greedy generations of plain and prior steering at several relative scales.

For choosing the demo's ``STEER_EXAMPLE_SCALES`` (``recipes.py``) by reading what the model says,
not only its scores: the ``STEER_EXAMPLE`` joy vector, a saved prior (default: the demo's MLP
prior), every prompt at every ``r`` (the hook adds ``r`` times the prior's reference norm along the
vector's unit direction), each text with the text judge's verdict (``evaluate.text_judge``, text
only) and its held-out joy words.

    .venv/bin/python benchmarks/steer_scales.py --prior reports/demo/priors/mlp

The generations read for issue 15 are in ``benchmarks/results/steer_scales.md``.
"""

from __future__ import annotations

import argparse

from tl_diffusion_prior.data import load_default_model
from tl_diffusion_prior.evaluate.text_judge import judge_fluency, lexicon_hits
from tl_diffusion_prior.priors import load_prior
from tl_diffusion_prior.recipes import STEER_EXAMPLE
from tl_diffusion_prior.steering import reference_norm_from_prior, steer, steering_vector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", default="reports/demo/priors/mlp")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5, 1.0])
    parser.add_argument(
        "--prompts", nargs="+", default=[STEER_EXAMPLE["prompt"], "What's your name?"]
    )
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--t-start", type=float, default=0.5)
    parser.add_argument("--num-steps", type=int, default=20)
    args = parser.parse_args()

    model = load_default_model()
    prior = load_prior(args.prior, device=next(model.parameters()).device)
    hook = prior.config.hook_name
    vector = steering_vector(model, hook, STEER_EXAMPLE["positive"], STEER_EXAMPLE["negative"])
    norm = reference_norm_from_prior(prior)
    print(f"|vector| {vector.norm():.1f}; reference norm {norm:.1f}; greedy")
    for prompt in args.prompts:
        tokens = model.to_tokens(prompt)

        def generate(tokens=tokens) -> str:
            out = model.generate(
                tokens, max_new_tokens=args.max_new_tokens, do_sample=False, verbose=False
            )
            return model.tokenizer.decode(out[0, tokens.shape[1] :], skip_special_tokens=True)

        print(f"\n### {prompt!r}")
        show("unsteered", generate())
        for r in args.scales:
            for label, with_prior in (("plain", None), ("prior", prior)):
                options = dict(t_start=args.t_start, num_steps=args.num_steps, seed=0)
                with steer(
                    model, hook, vector, r, with_prior, scale_mode="relative",
                    reference_norm=norm, **options,
                ):  # fmt: skip
                    show(f"r={r:g} {label}", generate())


def show(label: str, text: str) -> None:
    judgement = judge_fluency(text)
    verdict = "fluent" if judgement.fluent else "NOT fluent (" + "; ".join(judgement.reasons) + ")"
    hits = lexicon_hits(text, STEER_EXAMPLE["lexicon"])
    print(f"{label}: {text!r}  [{verdict}; {hits} joy words]", flush=True)


if __name__ == "__main__":
    main()
