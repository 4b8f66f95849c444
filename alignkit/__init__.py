"""alignkit: a complete, honest Stage-1 alignment study (SFT -> DPO -> evaluation) on Hugging Face models.

The package holds all logic; the numbered notebooks in ``notebooks/`` only call it and display results.
Importing it sets the CPU threading policy (:mod:`alignkit.threads`) before anything imports torch.
"""

from alignkit import threads as _threads

_threads.apply()

__version__ = "0.1.0"
