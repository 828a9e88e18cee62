"""Media handling outside the live path: probing and thumbnailing of stored recordings."""
