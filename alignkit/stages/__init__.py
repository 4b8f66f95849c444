"""The six stages of the study, one module each; every stage module has ``run(run, force)`` and named steps.

- :mod:`alignkit.stages.sft_data` (01): SFT examples the base model generates, verified; the train/dev/test splits;
- :mod:`alignkit.stages.sft` (02): SFT with the loss on response tokens only, once per training seed;
- :mod:`alignkit.stages.negatives` (03): five kinds of negatives, the SFT model's own failures first;
- :mod:`alignkit.stages.pairs` (04): preference pairs that keep their defect, with reference margins;
- :mod:`alignkit.stages.dpo` (05): DPO from SFT and from the base (the control), with diagnostics;
- :mod:`alignkit.stages.evaluation` (06): every arm on the held-out items, one model at a time, and the statistics;
- :mod:`alignkit.stages.registry`: which module runs which stage (what notebooks and ``alignkit stage`` call).

No stage imports another stage: where an earlier stage's outputs live is :mod:`alignkit.artifacts`. This file
imports nothing, because a package's ``__init__`` is part of every stage's code hash (:mod:`alignkit.codehash`).
"""
