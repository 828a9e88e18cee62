"""schemathesis hooks (loaded through SCHEMATHESIS_HOOKS): send tus bodies as raw bytes."""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
