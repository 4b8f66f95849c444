"""Evaluation without a model: the scorer (criteria, composites, the answer segment), the paired statistics with
seeds pooled, results.json's statistics (contrasts, power, headline) and the memory record of stage 06.

- :mod:`alignkit.eval.scoring`: the nine criteria, ``format``/``content`` composites and ``overall``;
- :mod:`alignkit.eval.stats`: one- and two-model statistics on scipy/statsmodels (Wilson, McNemar, Holm/BH, ...);
- :mod:`alignkit.eval.contrast_stats`: paired contrasts with seeds nested in items, and the minimum detectable
  difference;
- :mod:`alignkit.eval.results`: rates with per-seed spread, pre-registered contrasts, the headline;
- :mod:`alignkit.eval.memory`: RSS/CUDA sampling while a model generates.
"""
