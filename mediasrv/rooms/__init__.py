"""The SFU control plane: rooms, participants, peer transports, tracks and subscriptions."""
