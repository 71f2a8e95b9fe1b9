"""Labelling engine: samplers, reference calculators, resumable campaigns."""
