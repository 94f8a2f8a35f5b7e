"""File names, format versions, defaults and environment variables, in one place."""

FORMAT_VERSION = 1

# A saved prior or baseline (save_pretrained / from_pretrained).
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# What training or fitting produced (steps, losses, dates, data), beside the weights.
TRAINING_RECORD_NAME = "training.json"
# Beside the weights: file name -> sha256 of its bytes, checked on load (core.integrity).
CHECKSUMS_NAME = "checksums.json"
# The model card save_pretrained writes beside a prior's weights (provenance, format, usage).
MODEL_CARD_NAME = "README.md"
# The paper's released GLP checkpoint folders (generative_latent_prior): an OmegaConf config, the
# weights as <checkpoint>.safetensors (final, or checkpoints/epoch_N), and pickled statistics.
GLP_CONFIG_NAME = "config.yaml"
GLP_STATS_NAME = "rep_statistics.pt"
GLP_FINAL_CHECKPOINT = "final"
GLP_CHECKPOINTS_DIRNAME = "checkpoints"
# SAELens's own files of a saved SAE (sae_lens.constants), beside ours in an SAELens baseline.
SAE_LENS_CFG_NAME = "cfg.json"
SAE_LENS_WEIGHTS_NAME = "sae_weights.safetensors"
# A saved ring buffer.
BUFFER_NAME = "buffer.safetensors"
# Keys of a buffer file's safetensors metadata: the sha256 of each tensor's bytes (a JSON object)
# and where the activations came from (the model's name and weight fingerprint).
BUFFER_SHA256_KEY = "sha256"
MODEL_NAME_KEY = "model_name"
MODEL_FINGERPRINT_KEY = "model_fingerprint"
# A training checkpoint folder (checkpoint_dir/step_NNNNNNNN/).
CHECKPOINT_STATE_NAME = "trainer_state.safetensors"
CHECKPOINT_META_NAME = "trainer_state.json"
# A training run's loss curve.
LOSS_CSV_NAME = "loss.csv"
LOSS_PNG_NAME = "loss.png"

# The shipped trained prior (inside tl_diffusion_prior/priors/).
DEFAULT_PRIOR_DIRNAME = "default_prior"
# The packaged corpus (inside tl_diffusion_prior/data/).
CORPUS_DIRNAME = "corpus_data"
CORPUS_MANIFEST_NAME = "manifest.json"
# The default model's conversion cache: CONFIG_NAME, WEIGHTS_NAME and this folder.
TOKENIZER_DIRNAME = "tokenizer"
# The default model's Hugging Face-format cache (for the bridge) records what it was converted from
# here, beside the Hugging Face files (whose own config is config.json).
CONVERSION_RECORD_NAME = "conversion.json"

# An evaluation report folder.
REPORT_JSON_NAME = "report.json"
REPORT_MD_NAME = "report.md"
STEER_VECTORS_NAME = "steer_vectors.safetensors"
PLOTS_DIRNAME = "plots"
PRIORS_DIRNAME = "priors"
BASELINES_DIRNAME = "baselines"
# Its figures, under PLOTS_DIRNAME; ``{dataset}`` is a held-out set's name (e.g. "heldout").
PLOT_LOSS_CURVES_NAME = "loss_curves.png"
PLOT_DELTA_LM_NAME = "delta_lm_{dataset}.png"
PLOT_DISTORTION_NAME = "distortion_{dataset}.png"
PLOT_DISTORTION_NORMALIZED_NAME = "distortion_normalized_{dataset}.png"
PLOT_STEERING_PARETO_NAME = "steering_pareto.png"
PLOT_PCA_SCATTER_NAME = "pca_scatter.png"
# The demo's report folder adds these.
RUNS_DIRNAME = "runs"
DEMO_SUMMARY_NAME = "demo_summary.json"

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_LAYER = 15
DEFAULT_HOOK = f"blocks.{DEFAULT_LAYER}.hook_resid_post"

CACHE_ENV_VAR = "TL_DIFFUSION_PRIOR_CACHE"
QUICK_ENV_VAR = "TL_DIFFUSION_PRIOR_QUICK"
# huggingface_hub's switch for working from its cache only (read when a prior is loaded by name).
HF_HUB_OFFLINE_ENV_VAR = "HF_HUB_OFFLINE"
