"""Plain PyTorch implementations of the algorithms jaxunlearn ships, for side-by-side timing."""
