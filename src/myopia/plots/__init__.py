"""Every figure myopia draws, one module per result type; numbers in, PNG out (no statistics computed here).

- :mod:`~myopia.plots.style`: the arm palette, lazy matplotlib (Agg) and :func:`~myopia.plots.style.save`,
  the one way a figure is written (PNG bytes returned, optionally written atomically to a path).
- :mod:`~myopia.plots.training`: training curves of a pair and of the synthetic tasks.
- :mod:`~myopia.plots.report`: the gap by position, slice and class, the bonus, the arithmetic accuracy grid.
- :mod:`~myopia.plots.scaling`: loss vs compute, gap vs size, compute multiplier, horizon / beta curves.
- :mod:`~myopia.plots.gradients`: myopic vs future gradient over checkpoints (``myopia grad``).
- :mod:`~myopia.plots.probes`: future-token probes (``myopia probe``) and the synthetic lookback R² maps.
- :mod:`~myopia.plots.tasks`: the task suite's forest plot (``myopia tasks``, report section).

Importing this package (or any module in it) does not import matplotlib; drawing does.
"""
