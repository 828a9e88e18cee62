"""Servers mediasrv is compared against (see `loadtest compare`)."""
