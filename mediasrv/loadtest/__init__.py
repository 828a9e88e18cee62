"""mediasrv load generator: simulated visits over real WebRTC setup, media through a native pump."""
