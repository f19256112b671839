"""The shared training engine: the trainer (epoch loop, schedule, shuffling, divergence checks) and
its two step strategies (per seed, vectorised over seeds), the ELF objective, feature losses,
augmentation, ZCA whitening and numerics (precision, compiled steps). No stage lives here."""
