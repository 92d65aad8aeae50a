"""Every ``[settings]`` key the built-in metrics read, declared once with its default and meaning.

A metric's :class:`~nicebench.metric_spec.MetricSpec` lists the settings it reads; the run checks
its ``[settings]`` table against the settings of its metrics (and the run's own,
:data:`nicebench.metric_spec.RUN_SETTINGS`) before any work starts, and ``nicebench list
metrics`` prints them. Metrics read a value with ``SETTING.get(ctx.settings)``.
"""

from __future__ import annotations

from ..metric_spec import AUDIT_IMAGES, SEED, TARGET, Setting

__all__ = [
    "SEED",
    "TARGET",
    "AUDIT_IMAGES",
    "N_STEPS",
    "SUBSTRATE",
    "INSERTION_START",
    "SANITY_IMAGES",
    "REFIT_EPOCHS",
    "REFIT_IMAGES",
    "CASCADE",
    "INFIDELITY_PERTURBATION",
    "INFIDELITY_SQUARE",
    "INFIDELITY_STD",
    "INFIDELITY_SAMPLES",
    "SENSITIVITY_IMAGES",
    "SENSITIVITY_RADIUS",
    "SENSITIVITY_SAMPLES",
    "MAX_EXAMPLES_PER_BATCH",
    "ROAD_NOISE",
    "ROAD_PERCENTAGES",
    "QUALITY",
    "KEEPS",
    "QUALITIES",
    "FACTORS",
    "FACTOR",
    "DILATE",
    "TRACK_CODECS",
    "SSIM",
    "CODED_EXAMPLES",
    "FAITHFULNESS",
    "SANITY",
    "REFIT",
]

# Deletion, insertion and the fills' curves (SRG, ROAD).
N_STEPS = Setting(
    "n_steps",
    None,
    "steps of a deletion/insertion curve (default: the image's height, one row of pixels per step)",
)
SUBSTRATE = Setting(
    "substrate",
    "mean",
    "what deletion fills removed pixels with: mean, blur, or a constant in normalised space",
)
INSERTION_START = Setting(
    "insertion_start",
    "calibrated",
    "insertion's start image: a blur "
    "calibrated to chance + 0.10, RISE's literal blur, or the mean colour",
    choices=("calibrated", "rise", "mean"),
)
ROAD_NOISE = Setting("road_noise", 0.01, "std of the noise ROAD's imputation adds")
ROAD_PERCENTAGES = Setting(
    "road_percentages",
    (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "the shares of pixels ROAD removes",
)
#: The settings of every curve metric: steps, seed and the class scored.
FAITHFULNESS = (N_STEPS, SEED, TARGET)

# The randomisation tests (sanity, cascade, random logit) and the audit's randomised pass.
SANITY_IMAGES = Setting(
    "sanity_images", 32, "images per cell the randomisation tests explain again (NaN for the rest)"
)
REFIT_EPOCHS = Setting(
    "refit_epochs", 1, "epochs a learned method re-fits on a randomised classifier"
)
REFIT_IMAGES = Setting("refit_images", 2000, "training images of that re-fit")
CASCADE = Setting(
    "cascade",
    "1,3,all",
    "numbers of top layers randomised at each cascade step (comma-separated, 'all', or 'every')",
)
#: The settings of a method re-fitted on a randomised classifier.
REFIT = (SEED, REFIT_EPOCHS, REFIT_IMAGES)
SANITY = (SANITY_IMAGES, *REFIT)

# Robustness (captum's infidelity and max-sensitivity).
INFIDELITY_PERTURBATION = Setting(
    "infidelity_perturbation", "square", "infidelity's perturbation", choices=("square", "noise")
)
INFIDELITY_SQUARE = Setting("infidelity_square", 0.25, "side of infidelity's square, × the image")
INFIDELITY_STD = Setting("infidelity_std", 0.1, "σ of infidelity's Gaussian noise on [0, 1] pixels")
INFIDELITY_SAMPLES = Setting("infidelity_samples", 16, "infidelity's perturbations per image")
SENSITIVITY_IMAGES = Setting(
    "sensitivity_images", 32, "images per cell max-sensitivity explains again (NaN for the rest)"
)
SENSITIVITY_RADIUS = Setting(
    "sensitivity_radius", 0.02, "L∞ radius of max-sensitivity's perturbations"
)
SENSITIVITY_SAMPLES = Setting(
    "sensitivity_samples", 10, "max-sensitivity's perturbations per image"
)
MAX_EXAMPLES_PER_BATCH = Setting(
    "max_examples_per_batch",
    1024,
    "captum's chunk of perturbed inputs per forward pass (memory, not results)",
)

# The compression track (docs/design.md §6).
QUALITY = Setting("quality", 75, "the reference quality the ratios are measured at")
KEEPS = Setting("keeps", (0.1, 0.3), "shares of pixels kept sharp (top of the map)")
QUALITIES = Setting("qualities", (30, 50, 75), "qualities of a method's operating points")
FACTORS = Setting("factors", (4, 8), "background downsampling factors")
FACTOR = Setting("factor", None, "one background factor (older configs; factors wins)")
DILATE = Setting("dilate", 0, "pixels the kept mask is dilated by")
TRACK_CODECS = Setting(
    "track_codecs",
    "all",
    "code a method's images with every codec of the run or the reference (first) only",
    choices=("all", "reference"),
)
SSIM = Setting(
    "ssim",
    "front",
    "where SSIM is computed: the batch's front, every point, or none",
    choices=("front", "all", "none"),
)
CODED_EXAMPLES = Setting(
    "coded_examples", 2, "sample images whose coded files are kept for figures"
)
