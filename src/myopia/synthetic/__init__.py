"""Synthetic tasks where the answer to "does training pre-cache?" is known: sequence regression, arithmetic."""
