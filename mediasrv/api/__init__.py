"""Signaling front ends: the WebSocket room protocol, WHIP/WHEP, and the demo page."""
