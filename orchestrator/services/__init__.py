"""Use cases, one transaction each: replacement, promotions, purchases, cancels, the cycle, delivery."""
