"""The one error this package raises.

A resource that fails to parse or validate is the caller's mistake (a typo, a bad reference, a
missing field), so it is a `BadRequest`: the REST adapter answers 400 and the CLI prints the
message. The message is one readable line that names the document, the resource and the field.
"""

from inferline.protocol.errors import BadRequest


class ResourceError(BadRequest):
    """A Model, Server, Pipeline or Experiment manifest is malformed or invalid."""
