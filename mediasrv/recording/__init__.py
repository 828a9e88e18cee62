"""Consented visit recording and recorded messages without transcoding (issue 7).

The recorder reads complete frames from router sinks (a subscription of the room's native router whose
packets go into a jitter buffer inside the router), times them from RTCP sender reports, and a writer
thread muxes them as they are with PyAV straight into the encrypted blob store.
"""
