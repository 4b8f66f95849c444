"""alignkit: a complete, honest Stage-1 alignment study (SFT -> DPO -> evaluation) on Hugging Face models.

The package holds all logic; the numbered notebooks in ``notebooks/`` only call it and display results.
"""

__version__ = "0.1.0"
