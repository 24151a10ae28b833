"""Demo data so a newcomer sees a populated product at once."""
