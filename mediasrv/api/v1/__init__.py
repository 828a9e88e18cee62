"""The control API under /v1: rooms, tokens, messages, tus uploads, audit, recordings, vitals and the
OpenAPI document. Each module registers its routes with `setup_routes(app)`, called by
`mediasrv.app.create_app`, which also creates the stores the handlers use."""
