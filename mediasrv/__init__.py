"""mediasrv: a WebRTC SFU and store-and-forward media server for telehealth."""

__version__ = "0.1.0"
