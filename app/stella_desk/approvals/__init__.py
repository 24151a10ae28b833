"""Approvals: the inbox of promotions waiting for this person\x27s decision."""
