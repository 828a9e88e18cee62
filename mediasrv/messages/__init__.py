"""mediasrv/messages"""
