"""The default model as a HookedTransformer and as a TransformerBridge, compared.

Both are built offline from the same GGUF, by two independent dequantisations (ours for the
HookedTransformer, ``transformers``' for the bridge's Hugging Face model). Prints, for a few
prompts of the held-out corpus split and one with digits: the largest and the relative
difference of the ``blocks.15.hook_resid_post`` activations, the largest next-token logit
difference, whether the greedy next tokens agree, both weight fingerprints, and whether the
shipped prior (trained on the HookedTransformer) gives the same greedy steered text on both.
Needs TransformerLens 3.9 (the only version with both kinds). Nothing asserts here; the thresholds
are tested in ``tests/bridge/test_default_bridge.py``.

    .venv/bin/python benchmarks/bridge_equivalence.py
"""

from __future__ import annotations

import importlib.metadata
from datetime import date

import torch

from tl_diffusion_prior.constants import DEFAULT_HOOK
from tl_diffusion_prior.core.fingerprint import model_fingerprint
from tl_diffusion_prior.data import load_default_model
from tl_diffusion_prior.priors import load_default_prior
from tl_diffusion_prior.steering import steer, steering_vector

PROMPTS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune",
    "SELECT name, price FROM products WHERE price > 100 ORDER BY price DESC;",
    "Order 66 shipped  12,345 units in 1999, and",
    "The weather today is",
]


def steered_text(model, prior) -> str:
    vector = steering_vector(model, DEFAULT_HOOK, ["I love this, wonderful"], ["I hate this"])
    with steer(model, DEFAULT_HOOK, vector, 0.5, prior, scale_mode="relative", seed=0):
        return model.generate(PROMPTS[-1], max_new_tokens=16, do_sample=False, verbose=False)


def main() -> None:
    hooked, bridge = load_default_model(kind="hooked"), load_default_model(kind="bridge")
    tokens = hooked.to_tokens(PROMPTS, padding_side="right")
    assert torch.equal(tokens, bridge.to_tokens(PROMPTS, padding_side="right"))
    with torch.inference_mode():
        hooked_logits, hooked_cache = hooked.run_with_cache(tokens, names_filter=[DEFAULT_HOOK])
        bridge_logits, bridge_cache = bridge.run_with_cache(tokens, names_filter=[DEFAULT_HOOK])
    act, other = hooked_cache[DEFAULT_HOOK], bridge_cache[DEFAULT_HOOK]
    versions = {
        name: importlib.metadata.version(name) for name in ("transformer-lens", "transformers")
    }
    print(f"{date.today()} | {versions} | {tokens.shape[0]} prompts x {tokens.shape[1]} tokens")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| {DEFAULT_HOOK}: max abs difference | {(act - other).abs().max().item():.3g} |")
    print(f"| ... max abs difference, positions >= 1 | {(act - other)[:, 1:].abs().max():.3g} |")
    print(f"| ... relative difference (Frobenius) | {((act - other).norm() / act.norm()):.2g} |")
    print(f"| ... largest value | {act.abs().max().item():.3g} |")
    print(f"| logits: max abs difference | {(hooked_logits - bridge_logits).abs().max():.2g} |")
    same = torch.equal(hooked_logits.argmax(-1), bridge_logits.argmax(-1))
    print(f"| greedy next token equal at every position | {same} |")
    print(f"| weight fingerprints | {model_fingerprint(hooked)} / {model_fingerprint(bridge)} |")
    prior = load_default_prior()
    texts = steered_text(hooked, prior), steered_text(bridge, prior)
    print(f"| shipped prior, steered greedy text equal | {texts[0] == texts[1]} |")
    print(f"\nsteered text: {texts[0]!r}")


if __name__ == "__main__":
    main()
