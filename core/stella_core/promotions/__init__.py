"""Promotions: the pure decision engine that says whether a release may enter an environment."""
