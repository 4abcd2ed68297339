"""Use cases, one transaction each: lifecycle, purchases, cancels, the cycle, delivery."""
