"""Promotions: the pipeline board, the promotion wizard, a promotion\x27s detail."""
