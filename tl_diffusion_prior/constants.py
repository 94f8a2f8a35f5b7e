"""File names, format versions and defaults, in one place."""

FORMAT_VERSION = 1

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BUFFER_NAME = "buffer.safetensors"
CHECKPOINT_STATE_NAME = "trainer_state.safetensors"
CHECKPOINT_META_NAME = "trainer_state.json"
LOSS_CSV_NAME = "loss.csv"
LOSS_PNG_NAME = "loss.png"

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_LAYER = 15
DEFAULT_HOOK = f"blocks.{DEFAULT_LAYER}.hook_resid_post"

CACHE_ENV_VAR = "TL_DIFFUSION_PRIOR_CACHE"
QUICK_ENV_VAR = "TL_DIFFUSION_PRIOR_QUICK"
