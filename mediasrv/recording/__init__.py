"""Consented visit recording and recorded messages without transcoding (issue 7).

RTP from an internal subscriber goes through the native jitter buffer (`mediasrv_native.JitterBuffer`),
complete frames are muxed as they are with PyAV on a writer thread, and finished files are sealed into
the encrypted blob store.
"""
