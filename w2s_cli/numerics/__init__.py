"""The math of W2S, in float64 and without torch: moments, solvers, spectra, subspaces, variance, theory."""
