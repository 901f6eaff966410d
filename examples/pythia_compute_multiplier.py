"""The compute multiplier implied by the paper's Pythia fine-tuning table (PAPER.md result 4, approximate numbers).

Vanilla losses are fitted against pretraining compute C = 6 N 300e9 (all Pythia models saw the same 300B tokens;
the 10M x 64-token fine-tune adds < 0.3%); k = C*/C for each myopic fine-tune.
Run: PYTHONPATH=src python examples/pythia_compute_multiplier.py

Caveat (the constant-gap null): these are fine-tunes at one fixed token budget, compared along a ladder of sizes,
not the compute-optimal frontiers of two arms. Under L = E + A C^-alpha a *constant* gap already makes k fall as C
grows (the vanilla curve flattens), so the falling k printed below is not evidence that the gap grows with scale;
`constant_gap_k` prints the k that a constant gap (the smallest model's) would give, for comparison. Whether the
gap grows is measured on IsoFLOP frontiers: `myopia sweep --design isoflop` (docs/scaling.md).
"""

import numpy as np

from myopia.scaling import compute_multiplier, constant_gap_k, fit_power_law, multiplier_interval

SIZES = ["14M", "31M", "70M", "160M", "410M", "1B", "1.4B", "2.8B"]
NON_EMBEDDING = np.array([1_189_888, 4_739_072, 18_915_328, 85_056_000, 302_311_424, 805_736_448, 1_208_602_624,
                          2_517_652_480])  # Pythia non-embedding parameters (Biderman et al. 2023)
VANILLA = np.array([4.11, 3.73, 3.44, 3.03, 2.74, 2.62, 2.54, 2.44])
MYOPIC = np.array([4.27, 3.84, 3.48, 3.13, 2.89, 2.78, 2.71, 2.67])

compute = 6 * NON_EMBEDDING * 300e9
fit = fit_power_law(compute, VANILLA, bootstrap=200)
print(f"vanilla: E = {fit.E:.3f} {fit.intervals['E']}, alpha = {fit.alpha:.3f} {fit.intervals['alpha']}")
null = constant_gap_k(fit, MYOPIC[0] - fit.predict(compute[0]), compute)
for name, c, loss, k0 in zip(SIZES, compute, MYOPIC, null):
    lo, hi = multiplier_interval(fit, c, loss)
    print(f"{name:>5}: k = {compute_multiplier(fit, c, loss):.2f}  [{lo:.2f}, {hi:.2f}]   "
          f"constant-gap null k = {k0:.2f}")
print("A fixed-token fine-tuning ladder, not a frontier: compare k with the constant-gap null, not with 1.")
