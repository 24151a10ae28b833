"""The Evidence page: the signed ledger, one packet's detail, export, offline verify, replay."""
