"""Shared database plumbing: embedded server, engines, migrations, SQL building blocks."""
